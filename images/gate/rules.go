package main

// The gate's rules as pure functions: a request in, a route or a refusal out; a Contents API
// answer in, a verdict out. No I/O here, so every rule is a table test (rules_test.go).

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// Kind is what a request is to the meter.
type Kind int

const (
	// KindOther: everything that is neither file content nor output (the JupyterLab
	// application, settings, listings, the hub's status checks). Metered on its own budget.
	KindOther Kind = iota
	// KindContentsRead: GET api/contents/<path> with content: a file or notebook read.
	KindContentsRead
	// KindContentsWrite: PUT/POST/PATCH api/contents/<path>: a save or an upload.
	KindContentsWrite
	// KindKernelSocket: api/kernels/<id>/channels, the kernel's output to the browser.
	KindKernelSocket
	// KindTerminalSocket: terminals/websocket/<name>, a terminal's output to the browser.
	KindTerminalSocket
	// KindOtherSocket: any other websocket (events): metered as output.
	KindOtherSocket
)

// Route is a request the gate lets through: what it is and, for the Contents API, which file.
type Route struct {
	Kind Kind
	// Path is the notebook path, cleaned, relative to the server's root, without a leading
	// slash ("project/results.csv"); empty for routes that are not the Contents API.
	Path string
}

// Refusal is the gate's answer instead of forwarding: an HTTP status, a short rule name for
// the record, and the message JupyterLab shows (it reads `message` from a JSON error body).
type Refusal struct {
	Status  int
	Rule    string
	Message string
}

// Body is the JSON error body in the shape Jupyter Server's own errors have.
func (r *Refusal) Body() []byte {
	body, _ := json.Marshal(map[string]string{"message": r.Message, "reason": r.Rule})
	return body
}

const exportHint = "results leave a workspace only through a reviewed export: " +
	"tre export submit <file>"

// Roots under which no file is ever served to a browser: the approved datasets, and the kernel's
// views of every process's files (/proc/<pid>/root/data/... is the same dataset file).
var protectedRoots = []string{"data", "proc", "sys", "dev"}

// cleanNotebookPath is the path the Jupyter server will resolve, relative to its root: decoded,
// "." and ".." and repeated slashes removed, so "data//x", "project/../data/x" and "/data/x"
// all name data/x.
func cleanNotebookPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// underProtectedRoot reports whether a cleaned notebook path is, or is inside, a protected root.
func underProtectedRoot(p string) bool {
	for _, root := range protectedRoots {
		if p == root || strings.HasPrefix(p, root+"/") {
			return true
		}
	}
	return false
}

// truthy is how Jupyter Server reads a flag such as ?download=1 (anything but 0/false/empty).
func truthy(values url.Values, key string) bool {
	if _, present := values[key]; !present {
		return false
	}
	v := strings.ToLower(values.Get(key))
	return v != "0" && v != "false"
}

// Classify decides a request from its method, its path below the server's prefix (decoded,
// no leading slash) and its query. Raw file serving, downloads and every export handler are
// refused outright; a Contents API read in base64 (binary files) too.
func Classify(method, rel string, query url.Values) (Route, *Refusal) {
	rel = cleanNotebookPath(rel)
	segments := strings.SplitN(rel, "/", 3)
	first := segments[0]
	if truthy(query, "download") {
		return Route{}, &Refusal{http.StatusForbidden, "download",
			"downloads from a workspace are switched off; " + exportHint}
	}
	switch first {
	case "files", "view":
		// Jupyter Server's raw file handler and its iframe viewer of the same bytes.
		return Route{}, &Refusal{http.StatusForbidden, "raw-files",
			"files are not served raw to the browser; open them in JupyterLab, or " + exportHint}
	case "nbconvert":
		return Route{}, &Refusal{http.StatusForbidden, "nbconvert",
			"exporting notebooks (nbconvert) is switched off; " + exportHint}
	case "terminals":
		if len(segments) >= 2 && segments[1] == "websocket" {
			return Route{Kind: KindTerminalSocket}, nil
		}
	case "api":
		if len(segments) < 2 {
			break
		}
		switch segments[1] {
		case "nbconvert":
			return Route{}, &Refusal{http.StatusForbidden, "nbconvert",
				"exporting notebooks (nbconvert) is switched off; " + exportHint}
		case "contents":
			return classifyContents(method, segments, query)
		case "kernels":
			if strings.HasSuffix(rel, "/channels") {
				return Route{Kind: KindKernelSocket}, nil
			}
		case "events":
			if strings.HasSuffix(rel, "/subscribe") {
				return Route{Kind: KindOtherSocket}, nil
			}
		}
	}
	return Route{Kind: KindOther}, nil
}

func classifyContents(method string, segments []string, query url.Values) (Route, *Refusal) {
	p := ""
	if len(segments) == 3 {
		p = cleanNotebookPath(segments[2])
	}
	// checkpoints/<id> below a file: listing, creating and restoring, no content.
	if strings.Contains("/"+p+"/", "/checkpoints/") || strings.HasSuffix(p, "/checkpoints") {
		return Route{Kind: KindOther, Path: p}, nil
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		if query.Get("content") == "0" {
			return Route{Kind: KindOther, Path: p}, nil
		}
		if query.Get("format") == "base64" {
			return Route{}, &Refusal{http.StatusForbidden, "binary-read",
				"binary files are not sent to the browser (" + p + "); " + exportHint}
		}
		return Route{Kind: KindContentsRead, Path: p}, nil
	case http.MethodPut, http.MethodPost, http.MethodPatch:
		return Route{Kind: KindContentsWrite, Path: p}, nil
	}
	return Route{Kind: KindOther, Path: p}, nil
}

// ContentsModel is the part of a Jupyter Server Contents API answer the gate judges.
type ContentsModel struct {
	Type   string `json:"type"`
	Format string `json:"format"`
	Path   string `json:"path"`
}

// JudgeRead decides a Contents API read from the server's answer, whose body is at most
// readCap bytes (the caller refuses larger ones before parsing). Directories pass (names only:
// they are metered as other traffic); a file or notebook under a dataset mount never does, and
// neither does base64 content (a binary file).
func JudgeRead(requested string, body []byte) (ContentsModel, *Refusal) {
	var model ContentsModel
	if err := json.Unmarshal(body, &model); err != nil {
		return model, &Refusal{http.StatusBadGateway, "unreadable-answer",
			"the notebook server's answer for " + requested + " is not a Contents model"}
	}
	if model.Type == "directory" {
		return model, nil
	}
	for _, p := range []string{requested, cleanNotebookPath(model.Path)} {
		if underProtectedRoot(p) {
			return model, &Refusal{http.StatusForbidden, "dataset-read",
				"files under /" + strings.SplitN(p, "/", 2)[0] + " are not shown in the " +
					"browser: read the approved data in a notebook or terminal; " + exportHint}
		}
	}
	if model.Format == "base64" {
		return model, &Refusal{http.StatusForbidden, "binary-read",
			"binary files are not sent to the browser (" + requested + "); " + exportHint}
	}
	return model, nil
}

// UploadModel is the part of a Contents API save the gate records.
type UploadModel struct {
	Type    string `json:"type"`
	Format  string `json:"format"`
	Content any    `json:"content"`
	Chunk   *int   `json:"chunk"`
}

// JudgeWrite refuses a save into a protected root (read-only anyway: said clearly here).
func JudgeWrite(p string) *Refusal {
	if underProtectedRoot(p) {
		return &Refusal{http.StatusForbidden, "dataset-write",
			"nothing can be written under /" + strings.SplitN(p, "/", 2)[0]}
	}
	return nil
}
