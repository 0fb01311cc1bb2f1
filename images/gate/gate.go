package main

// The gate: every request from a browser to the notebook server passes here. It refuses what
// carries files out (rules.go), meters what reaches the browser (meter.go, websocket.go) and
// records every file served and every upload.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Gate is the http.Handler in front of one notebook server.
type Gate struct {
	upstream string // host:port of the notebook server, on the pod's loopback
	prefix   string // the server's URL prefix, "/user/<name>/<server>/"
	limits   Limits
	ledger   *Ledger
	recorder *Recorder
	now      func() time.Time
	proxy    *httputil.ReverseProxy
	// Bodies the gate holds whole to judge them; at most two at a time bounds its memory.
	buffers chan struct{}
	mu      sync.Mutex
	chunks  map[string]int64 // bytes of a chunked upload so far, by path
}

// refusalError carries a refusal out of the reverse proxy's response hook.
type refusalError struct{ refusal *Refusal }

func (e refusalError) Error() string { return e.refusal.Message }

type routeKey struct{}

func withRoute(r *http.Request, route Route) context.Context {
	return context.WithValue(r.Context(), routeKey{}, route)
}

func routeOf(r *http.Request) Route {
	route, _ := r.Context().Value(routeKey{}).(Route)
	return route
}

// NewGate wires the gate in front of upstream.
func NewGate(upstream, prefix string, limits Limits, ledger *Ledger, recorder *Recorder,
	now func() time.Time) *Gate {
	g := &Gate{
		upstream: upstream, prefix: prefix, limits: limits, ledger: ledger,
		recorder: recorder, now: now, buffers: make(chan struct{}, 2),
		chunks: map[string]int64{},
	}
	target := &url.URL{Scheme: "http", Host: upstream}
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the notebook server checks Host against its own URL
		},
		ModifyResponse: g.judgeResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var refused refusalError
			if errors.As(err, &refused) {
				g.refuse(w, r, refused.refusal)
				return
			}
			g.refuse(w, r, &Refusal{http.StatusBadGateway, "upstream",
				"the notebook server did not answer; restart your server from the hub"})
		},
		FlushInterval: -1, // stream as it comes (server-sent events, long answers)
	}
	return g
}

func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rel, ok := strings.CutPrefix(r.URL.Path, g.prefix)
	inside := ok || r.URL.Path+"/" == g.prefix
	route, refusal := Classify(r.Method, rel, r.URL.Query())
	socket := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	// A full spool closes the gate: a record that cannot be kept must not be a file served
	// without one. Only what JupyterLab needs to load and show the refusal passes: reads that
	// make no record (the application, settings, lists of kernels and sessions).
	if g.recorder.Undeliverable() && !(inside && refusal == nil && route.Kind == KindOther &&
		!socket && (r.Method == http.MethodGet || r.Method == http.MethodHead)) {
		g.recorder.Log("request.refused", map[string]any{
			"rule": undeliverable.Rule, "method": r.Method, "path": r.URL.Path,
		})
		g.answer(w, undeliverable)
		return
	}
	if !inside {
		g.refuse(w, r, &Refusal{http.StatusNotFound, "outside-prefix",
			"this gate serves " + g.prefix + " only"})
		return
	}
	if refusal != nil {
		g.refuse(w, r, refusal)
		return
	}
	if socket {
		g.serveSocket(w, r, route)
		return
	}
	meter := MeterOther
	if route.Kind == KindContentsRead {
		meter = MeterContent
	}
	if g.ledger.Crossed(meter) {
		g.refuse(w, r, g.budgetRefusal(meter))
		return
	}
	if route.Kind == KindContentsWrite {
		if refusal := g.judgeWrite(r, route.Path); refusal != nil {
			g.refuse(w, r, refusal)
			return
		}
	}
	g.proxy.ServeHTTP(w, r.WithContext(withRoute(r, route)))
}

func (g *Gate) budgetRefusal(m Meter) *Refusal {
	what := "file content and output"
	if m == MeterOther {
		what = "browser traffic"
	}
	return &Refusal{http.StatusTooManyRequests, "budget",
		fmt.Sprintf("today's budget for %s sent to the browser from this workspace (%d MiB) "+
			"is used up; it starts again tomorrow (UTC). Your work and your kernels are not "+
			"affected; %s", what, g.ledger.budget(m)>>20, exportHint)}
}

func (g *Gate) refuse(w http.ResponseWriter, r *http.Request, refusal *Refusal) {
	g.recorder.Write("request.refused", map[string]any{
		"rule": refusal.Rule, "method": r.Method, "path": r.URL.Path,
	})
	g.answer(w, refusal)
}

// undeliverable is the answer of a gate whose spool is full (records.go).
var undeliverable = &Refusal{http.StatusServiceUnavailable, "records-undeliverable",
	"the workspace's activity records cannot be delivered; ask the platform team. Your work " +
		"and your kernels are not affected; the workspace opens again once the records are " +
		"delivered"}

func (g *Gate) answer(w http.ResponseWriter, refusal *Refusal) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(refusal.Status)
	_, _ = w.Write(refusal.Body())
}

// --- answers ---------------------------------------------------------------------------------

func (g *Gate) judgeResponse(resp *http.Response) error {
	route := routeOf(resp.Request)
	if route.Kind == KindContentsRead && resp.StatusCode == http.StatusOK {
		return g.judgeRead(resp, route.Path)
	}
	// Everything else, error answers of reads included, is charged to the other budget.
	meter := MeterOther
	if resp.ContentLength > 0 && !g.ledger.Charge(meter, resp.ContentLength) {
		return refusalError{g.budgetRefusal(meter)}
	}
	if resp.ContentLength < 0 { // streamed: charged as it flows, cut where it stops fitting
		resp.Body = &meteredBody{body: resp.Body, ledger: g.ledger, meter: meter}
	}
	return nil
}

// judgeRead holds a file read's answer whole (at most the read cap), decides it, charges it to
// the content budget and records what was served.
func (g *Gate) judgeRead(resp *http.Response, path string) error {
	tooLarge := &Refusal{http.StatusForbidden, "size-cap", fmt.Sprintf(
		"%s is larger than the %d MiB a file may be to be opened in the browser in this "+
			"workspace; work with it in a notebook, or %s", path, g.limits.ReadCap>>20, exportHint)}
	if resp.ContentLength > g.limits.ReadCap {
		resp.Body.Close()
		return refusalError{tooLarge}
	}
	g.buffers <- struct{}{}
	defer func() { <-g.buffers }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, g.limits.ReadCap+1))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if int64(len(body)) > g.limits.ReadCap {
		return refusalError{tooLarge}
	}
	model, refusal := JudgeRead(path, body)
	if refusal != nil {
		return refusalError{refusal}
	}
	meter := MeterContent
	if model.Type == "directory" {
		meter = MeterOther
	}
	if !g.ledger.Charge(meter, int64(len(body))) {
		return refusalError{g.budgetRefusal(meter)}
	}
	if model.Type != "directory" {
		g.recorder.Write("file.served", map[string]any{
			"path": "/" + path, "type": model.Type, "bytes": len(body),
			"sha256": contentHash(model.Type, body),
		})
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
	return nil
}

// contentHash is the sha256 of a text file's bytes (the Contents API sends them as its
// `content`, decoded as UTF-8: the same bytes, so a served copy of a dataset file has the
// dataset object's hash), or of the whole answer for a notebook.
func contentHash(kind string, body []byte) string {
	if kind == "file" {
		var model struct {
			Content string `json:"content"`
		}
		if json.Unmarshal(body, &model) == nil {
			sum := sha256.Sum256([]byte(model.Content))
			return hex.EncodeToString(sum[:])
		}
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// meteredBody charges a streamed answer as it is read and stops it where it no longer fits.
type meteredBody struct {
	body   io.ReadCloser
	ledger *Ledger
	meter  Meter
}

func (m *meteredBody) Read(p []byte) (int, error) {
	n, err := m.body.Read(p)
	if n > 0 && !m.ledger.Charge(m.meter, int64(n)) {
		return 0, errors.New("browser budget used up")
	}
	return n, err
}

func (m *meteredBody) Close() error { return m.body.Close() }

// --- saves and uploads -------------------------------------------------------------------------

// judgeWrite holds a save's body (at most the upload cap), refuses writes under a dataset
// mount and uploads over the cap (chunked uploads counted whole), records every file put into
// the workspace, and hands the body on.
func (g *Gate) judgeWrite(r *http.Request, path string) *Refusal {
	if refusal := JudgeWrite(path); refusal != nil {
		return refusal
	}
	tooLarge := &Refusal{http.StatusRequestEntityTooLarge, "upload-cap", fmt.Sprintf(
		"%s: files put into this workspace from a browser may be at most %d MiB; ask the "+
			"platform team to bring larger data in as a dataset", path, g.limits.UploadCap>>20)}
	if r.ContentLength > g.limits.UploadCap {
		drain(r.Body)
		return tooLarge
	}
	g.buffers <- struct{}{}
	defer func() { <-g.buffers }()
	body, err := io.ReadAll(io.LimitReader(r.Body, g.limits.UploadCap+1))
	if err != nil {
		return &Refusal{http.StatusBadRequest, "upload-read", "the upload was interrupted"}
	}
	if int64(len(body)) > g.limits.UploadCap {
		drain(r.Body)
		return tooLarge
	}
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	var model UploadModel
	if json.Unmarshal(body, &model) != nil || model.Type != "file" {
		return nil // notebooks saved from the editor, renames, new files: no file content
	}
	text, _ := model.Content.(string)
	content := []byte(text)
	if model.Format == "base64" {
		decoded, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return &Refusal{http.StatusBadRequest, "upload-read", path + ": content is not base64"}
		}
		content = decoded
	}
	total := int64(len(content))
	if model.Chunk != nil {
		g.mu.Lock()
		if *model.Chunk == 1 {
			g.chunks[path] = 0
		}
		total += g.chunks[path]
		g.chunks[path] = total
		if *model.Chunk == -1 {
			delete(g.chunks, path)
		}
		g.mu.Unlock()
		if total > g.limits.UploadCap {
			return tooLarge
		}
	}
	sum := sha256.Sum256(content)
	record := map[string]any{"path": "/" + path, "bytes": len(content),
		"sha256": hex.EncodeToString(sum[:])}
	if model.Chunk != nil {
		record["chunk"] = *model.Chunk
		record["totalBytes"] = total
	}
	g.recorder.Write("upload.received", record)
	return nil
}

// drain reads what is left of a refused upload (up to maxDrain), so the browser gets the
// refusal as an answer instead of a connection reset in the middle of its request.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, maxDrain)
	body.Close()
}

// An upload larger than this past the cap is cut off without a readable refusal: a browser
// that sends that much gets a reset connection.
const maxDrain = 256 << 20

// --- websockets ------------------------------------------------------------------------------

func (g *Gate) serveSocket(w http.ResponseWriter, r *http.Request, route Route) {
	var cut cutter = dropCutter{}
	message := fmt.Sprintf("[output cut: today's budget for output sent to the browser from "+
		"this workspace (%d MiB) is used up; the code still runs and its results are in "+
		"your files. %s]", g.ledger.budget(MeterContent)>>20, exportHint)
	switch route.Kind {
	case KindKernelSocket:
		cut = newKernelCutter(message, g.now)
		// The JSON protocol, which the gate can read: JupyterLab falls back to it when the
		// server does not pick the binary one, and the server picks only what is offered.
		r.Header.Del("Sec-WebSocket-Protocol")
	case KindTerminalSocket:
		cut = &terminalCutter{message: message}
	}
	// Compressed frames could not be judged after the cut.
	r.Header.Del("Sec-WebSocket-Extensions")
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		g.refuse(w, r, &Refusal{http.StatusInternalServerError, "socket", "no websocket here"})
		return
	}
	upstream, err := net.DialTimeout("tcp", g.upstream, 5*time.Second)
	if err != nil {
		g.refuse(w, r, &Refusal{http.StatusBadGateway, "upstream",
			"the notebook server did not answer; restart your server from the hub"})
		return
	}
	defer upstream.Close()
	if err := r.Write(upstream); err != nil {
		return
	}
	fromServer := bufio.NewReader(upstream)
	resp, err := http.ReadResponse(fromServer, r)
	if err != nil {
		g.refuse(w, r, &Refusal{http.StatusBadGateway, "upstream", "the notebook server " +
			"closed the connection"})
		return
	}
	browser, buffered, err := hijacker.Hijack()
	if err != nil {
		return
	}
	defer browser.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = resp.Write(browser) // an error answer (unknown kernel): small, passed on
		return
	}
	if err := resp.Write(browser); err != nil {
		return
	}
	go func() {
		// The browser's messages to the server (code to run, keystrokes) pass unmetered.
		if buffered.Reader.Buffered() > 0 {
			pending, _ := buffered.Reader.Peek(buffered.Reader.Buffered())
			_, _ = upstream.Write(pending)
		}
		_, _ = io.Copy(upstream, browser)
		upstream.Close()
	}()
	_ = PumpToBrowser(browser, fromServer, g.ledger, cut)
}
