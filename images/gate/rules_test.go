package main

import (
	"net/http"
	"net/url"
	"testing"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		method, rel, query string
		kind               Kind
		path               string
		rule               string // refused by this rule, or "" when let through
	}{
		{"GET", "files/project/a.csv", "", 0, "", "raw-files"},
		{"GET", "view/project/a.html", "", 0, "", "raw-files"},
		{"GET", "./files//project/a.csv", "", 0, "", "raw-files"},
		{"GET", "project/../files/data/x", "", 0, "", "raw-files"},
		{"GET", "api/contents/project/a.csv", "download=1", 0, "", "download"},
		{"GET", "lab/tree/project", "download=true", 0, "", "download"},
		{"GET", "api/contents/project/a.csv", "download=0", KindContentsRead, "project/a.csv", ""},
		{"GET", "nbconvert/html/project/a.ipynb", "", 0, "", "nbconvert"},
		{"POST", "api/nbconvert", "", 0, "", "nbconvert"},
		{"GET", "api/contents/project/a.png", "type=file&format=base64", 0, "", "binary-read"},
		{"GET", "api/contents/project/a.csv", "type=file&format=text", KindContentsRead, "project/a.csv", ""},
		{"GET", "api/contents/data/cohort", "content=0", KindOther, "data/cohort", ""},
		{"GET", "api/contents/project//x/../a.csv", "", KindContentsRead, "project/a.csv", ""},
		{"PUT", "api/contents/project/up.csv", "", KindContentsWrite, "project/up.csv", ""},
		{"POST", "api/contents/project/a.ipynb/checkpoints", "", KindOther, "project/a.ipynb/checkpoints", ""},
		{"GET", "api/kernels/0a1b/channels", "session_id=x", KindKernelSocket, "", ""},
		{"GET", "terminals/websocket/1", "", KindTerminalSocket, "", ""},
		{"GET", "api/events/subscribe", "", KindOtherSocket, "", ""},
		{"GET", "lab", "", KindOther, "", ""},
		{"GET", "static/lab/main.js", "", KindOther, "", ""},
	}
	for _, c := range cases {
		query, _ := url.ParseQuery(c.query)
		route, refusal := Classify(c.method, c.rel, query)
		switch {
		case c.rule != "":
			if refusal == nil || refusal.Rule != c.rule {
				t.Errorf("%s %s?%s: want refused by %s, got %+v %+v", c.method, c.rel, c.query, c.rule, route, refusal)
			}
		case refusal != nil:
			t.Errorf("%s %s?%s: refused by %s: %s", c.method, c.rel, c.query, refusal.Rule, refusal.Message)
		case route.Kind != c.kind || route.Path != c.path:
			t.Errorf("%s %s?%s: got %+v, want kind %d path %q", c.method, c.rel, c.query, route, c.kind, c.path)
		}
	}
}

func TestJudgeRead(t *testing.T) {
	cases := []struct {
		requested, body, rule string
	}{
		{"project/a.csv", `{"type":"file","format":"text","path":"project/a.csv","content":"x"}`, ""},
		{"project/a.ipynb", `{"type":"notebook","format":"json","path":"project/a.ipynb","content":{}}`, ""},
		{"data/cohort", `{"type":"directory","format":"json","path":"data/cohort","content":[]}`, ""},
		{"data/cohort/rows.csv", `{"type":"file","format":"text","path":"data/cohort/rows.csv"}`, "dataset-read"},
		{"data", `{"type":"file","format":"text","path":"data"}`, "dataset-read"},
		{"proc/1/root/data/cohort/rows.csv", `{"type":"file","format":"text","path":"proc/1/root/data/cohort/rows.csv"}`, "dataset-read"},
		// The server's own answer names the dataset path: refused whatever was asked.
		{"project/link.csv", `{"type":"file","format":"text","path":"/data/cohort/rows.csv"}`, "dataset-read"},
		{"project/a.bin", `{"type":"file","format":"base64","path":"project/a.bin"}`, "binary-read"},
		{"project/a.csv", `not json`, "unreadable-answer"},
		{"database.csv", `{"type":"file","format":"text","path":"database.csv"}`, ""},
	}
	for _, c := range cases {
		_, refusal := JudgeRead(c.requested, []byte(c.body))
		got := ""
		if refusal != nil {
			got = refusal.Rule
		}
		if got != c.rule {
			t.Errorf("%s: got %q, want %q", c.requested, got, c.rule)
		}
		if refusal != nil && refusal.Status == http.StatusOK {
			t.Errorf("%s: a refusal with status 200", c.requested)
		}
	}
}
