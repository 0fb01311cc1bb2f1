package main

// The gate in front of a stand-in notebook server (httptest): the real Jupyter server behind
// a real gate is tested in tests/integration/test_gate.py.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const prefix = "/user/rik/heart/"

type harness struct {
	gate     *httptest.Server
	records  *bytes.Buffer
	ledger   *Ledger
	received []string // bodies the notebook server got
}

func fixedNow() time.Time { return time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC) }

func newHarness(t *testing.T, limits Limits, upstream http.HandlerFunc) *harness {
	t.Helper()
	return newSpooledHarness(t, limits, nil, upstream)
}

// newSpooledHarness keeps the gate's records in spool (nil: none).
func newSpooledHarness(t *testing.T, limits Limits, spool *Spool, upstream http.HandlerFunc) *harness {
	t.Helper()
	h := &harness{records: &bytes.Buffer{}}
	notebook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.received = append(h.received, string(body))
		upstream(w, r)
	}))
	t.Cleanup(notebook.Close)
	recorder := NewRecorder(h.records, "rik", "heart", fixedNow, spool)
	h.ledger = NewLedger(limits, filepath.Join(t.TempDir(), "ledger.json"), fixedNow, recorder)
	gate := NewGate(strings.TrimPrefix(notebook.URL, "http://"), prefix, limits, h.ledger, recorder, fixedNow)
	h.gate = httptest.NewServer(gate)
	t.Cleanup(h.gate.Close)
	return h
}

func (h *harness) events(name string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(h.records.String()), "\n") {
		var record map[string]any
		if json.Unmarshal([]byte(line), &record) == nil && record["event"] == name {
			out = append(out, record)
		}
	}
	return out
}

func get(t *testing.T, url string) (int, map[string]any, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	return resp.StatusCode, body, string(raw)
}

var limits = Limits{ReadCap: 1 << 10, UploadCap: 1 << 10, ContentBudget: 4 << 10, OtherBudget: 1 << 20}

func contents(content string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, prefix+"api/contents/")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"type": "file", "format": "text", "path": p, "content": content,
		})
	}
}

func TestRefusedRoutesNeverReachTheServer(t *testing.T) {
	h := newHarness(t, limits, contents("x"))
	for _, path := range []string{"files/project/a.csv", "api/contents/project/a.csv?download=1",
		"nbconvert/html/project/a.ipynb", "api/contents/project/a.png?format=base64&type=file"} {
		status, body, _ := get(t, h.gate.URL+prefix+path)
		if status != http.StatusForbidden || !strings.Contains(fmt.Sprint(body["message"]), "tre export submit") {
			t.Errorf("%s: %d %v", path, status, body)
		}
	}
	if len(h.received) != 0 {
		t.Errorf("the notebook server was asked %d times", len(h.received))
	}
	if got := len(h.events("request.refused")); got != 4 {
		t.Errorf("%d refusals recorded, want 4", got)
	}
}

func TestAFileReadIsServedChargedAndRecordedWithItsHash(t *testing.T) {
	h := newHarness(t, limits, contents("a,b\n1,2\n"))
	status, body, raw := get(t, h.gate.URL+prefix+"api/contents/project/a.csv")
	if status != 200 || body["content"] != "a,b\n1,2\n" {
		t.Fatalf("%d %v", status, body)
	}
	served := h.events("file.served")
	sum := sha256.Sum256([]byte("a,b\n1,2\n"))
	if len(served) != 1 || served[0]["sha256"] != hex.EncodeToString(sum[:]) ||
		served[0]["path"] != "/project/a.csv" || served[0]["user"] != "rik" || served[0]["project"] != "heart" {
		t.Fatalf("records: %v", served)
	}
	if used := h.ledger.Used(MeterContent); used != int64(len(raw)) {
		t.Errorf("content used %d, want %d", used, len(raw))
	}
}

func TestDatasetFilesAndLargeFilesAreRefusedFromTheServersAnswer(t *testing.T) {
	h := newHarness(t, limits, contents(strings.Repeat("x", 2<<10)))
	status, body, _ := get(t, h.gate.URL+prefix+"api/contents/project/big.csv")
	if status != 403 || body["reason"] != "size-cap" {
		t.Errorf("over the cap: %d %v", status, body)
	}
	h2 := newHarness(t, limits, contents("rows"))
	status, body, _ = get(t, h2.gate.URL+prefix+"api/contents/data/cohort/rows.csv")
	if status != 403 || body["reason"] != "dataset-read" {
		t.Errorf("dataset: %d %v", status, body)
	}
	if len(h.events("file.served"))+len(h2.events("file.served")) != 0 {
		t.Error("a refused read was recorded as served")
	}
}

func TestTheContentBudgetRefusesReadsOnceCrossedAndRecordsTheCrossingOnce(t *testing.T) {
	h := newHarness(t, limits, contents(strings.Repeat("y", 900)))
	ok := 0
	for range 8 {
		if status, _, _ := get(t, h.gate.URL+prefix+"api/contents/project/a.csv"); status == 200 {
			ok++
		}
	}
	if ok != 4 { // 4 KiB budget, ~0.95 KiB a read
		t.Errorf("%d reads served, want 4", ok)
	}
	status, body, _ := get(t, h.gate.URL+prefix+"api/contents/project/a.csv")
	if status != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(body["message"]), "used up") {
		t.Errorf("after the budget: %d %v", status, body)
	}
	if crossed := h.events("budget.crossed"); len(crossed) != 1 || crossed[0]["meter"] != "content" {
		t.Errorf("crossings: %v", crossed)
	}
	// Other traffic (the application) keeps working.
	if status, _, _ := get(t, h.gate.URL+prefix+"lab"); status != 200 {
		t.Errorf("lab after the content budget: %d", status)
	}
}

func TestTheCountSurvivesARestartOfTheGateOnTheSameDay(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ledger.json")
	rec := &Recorder{out: io.Discard, now: fixedNow}
	first := NewLedger(limits, file, fixedNow, rec)
	first.Charge(MeterContent, 3000)
	first.Save()
	second := NewLedger(limits, file, fixedNow, rec)
	if second.Used(MeterContent) != 3000 || second.Charge(MeterContent, 2000) {
		t.Errorf("restarted ledger: used %d", second.Used(MeterContent))
	}
	tomorrow := func() time.Time { return fixedNow().Add(24 * time.Hour) }
	if third := NewLedger(limits, file, tomorrow, rec); third.Used(MeterContent) != 0 {
		t.Error("yesterday's count carried into today")
	}
	if info, _ := os.Stat(file); info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", info.Mode().Perm())
	}
}

func put(t *testing.T, url string, model map[string]any) (int, map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(model)
	req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(raw))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func TestUploadsAreCappedChunksCountedWholeAndRecorded(t *testing.T) {
	h := newHarness(t, limits, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(201) })
	url := h.gate.URL + prefix + "api/contents/project/up.csv"
	if status, _ := put(t, url, map[string]any{"type": "file", "format": "text", "content": "abc"}); status != 201 {
		t.Fatalf("small upload: %d", status)
	}
	status, body := put(t, url, map[string]any{"type": "file", "format": "text", "content": strings.Repeat("z", 2<<10)})
	if status != http.StatusRequestEntityTooLarge || body["reason"] != "upload-cap" {
		t.Errorf("large upload: %d %v", status, body)
	}
	chunk := strings.Repeat("c", 600)
	for i, n := range []int{1, 2} {
		status, _ = put(t, url, map[string]any{"type": "file", "format": "text", "content": chunk, "chunk": n})
		if want := []int{201, 413}[i]; status != want {
			t.Errorf("chunk %d: %d, want %d", n, status, want)
		}
	}
	if status, _ := put(t, h.gate.URL+prefix+"api/contents/data/cohort/x.csv", map[string]any{"type": "file", "content": "x"}); status != 403 {
		t.Errorf("write under /data: %d", status)
	}
	if got := len(h.events("upload.received")); got != 2 {
		t.Errorf("%d uploads recorded, want 2 (the small one and the first chunk)", got)
	}
	if len(h.received) != 2 {
		t.Errorf("the server received %d saves, want 2", len(h.received))
	}
}

// --- websockets ---

// kernelServer answers an upgrade and then sends the frames it is given, unmasked.
func kernelServer(t *testing.T, frames [][]byte, gotProtocol *string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		*gotProtocol = r.Header.Get("Sec-WebSocket-Protocol") + "|" + r.Header.Get("Sec-WebSocket-Extensions")
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprint(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		for _, f := range frames {
			_ = writeFrame(buf, opText, f)
		}
		_ = writeClose(buf, "done")
		buf.Flush()
		time.Sleep(50 * time.Millisecond)
	}
}

func kernelMessage(msgType, parent, text string) []byte {
	out, _ := json.Marshal(map[string]any{
		"header":        map[string]any{"msg_id": "m-" + msgType, "msg_type": msgType},
		"parent_header": map[string]any{"msg_id": parent, "session": "s"},
		"content":       map[string]any{"name": "stdout", "text": text, "execution_state": "idle"},
		"channel":       "iopub",
	})
	return out
}

// readFrames dials the gate as a browser would and returns the text frames it receives.
func readFrames(t *testing.T, gateURL, path string) []string {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(gateURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Protocol: v1.kernel.websocket.jupyter.org\r\n"+
		"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n", path)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	var texts []string
	for {
		h, err := readFrameHeader(r)
		if err != nil {
			return texts
		}
		payload := make([]byte, h.length)
		if _, err := io.ReadFull(r, payload); err != nil {
			return texts
		}
		if h.opcode == opClose {
			return texts
		}
		texts = append(texts, string(payload))
	}
}

func TestKernelOutputPastTheBudgetIsCutWithANoticeAndTheKernelKeepsWorking(t *testing.T) {
	out := strings.Repeat("o", 1000)
	frames := [][]byte{kernelMessage("status", "p1", "busy")}
	for range 6 {
		frames = append(frames, kernelMessage("stream", "p1", out))
	}
	frames = append(frames, kernelMessage("execute_reply", "p1", "ok"), kernelMessage("status", "p1", "idle"))
	var protocol string
	h := newHarness(t, limits, kernelServer(t, frames, &protocol))
	texts := readFrames(t, h.gate.URL, prefix+"api/kernels/k1/channels")
	if protocol != "|" {
		t.Errorf("the server was offered %q: the gate must ask for the JSON protocol, uncompressed", protocol)
	}
	streams, notices, replies := 0, 0, 0
	for _, text := range texts {
		switch {
		case strings.Contains(text, "[output cut"):
			notices++
			if !strings.Contains(text, `"msg_id":"p1"`) {
				t.Errorf("the notice is not under the cell: %s", text)
			}
		case strings.Contains(text, `"stream"`):
			streams++
		case strings.Contains(text, `"execute_reply"`) || strings.Contains(text, `"status"`):
			replies++
		}
	}
	// 4 KiB budget: the status and three outputs of ~1.2 KiB fit, then the cut.
	if streams != 3 || notices != 1 || replies != 3 {
		t.Errorf("streams %d notices %d replies %d; frames: %d", streams, notices, replies, len(texts))
	}
	if !h.ledger.Crossed(MeterContent) || len(h.events("budget.crossed")) != 1 {
		t.Error("the crossing was not recorded")
	}
}

func TestTerminalOutputPastTheBudgetIsCut(t *testing.T) {
	var frames [][]byte
	for range 8 {
		frames = append(frames, []byte(`["stdout", "`+strings.Repeat("t", 900)+`"]`))
	}
	var protocol string
	h := newHarness(t, limits, kernelServer(t, frames, &protocol))
	texts := readFrames(t, h.gate.URL, prefix+"terminals/websocket/1")
	if len(texts) != 5 || !strings.Contains(texts[4], "output cut") {
		t.Errorf("got %d frames, last %q", len(texts), texts[len(texts)-1])
	}
}

func TestOnceCrossedTheBudgetStaysUsedUpForTheDay(t *testing.T) {
	l := NewLedger(limits, "", fixedNow, &Recorder{out: io.Discard, now: fixedNow})
	if !l.Charge(MeterContent, 4000) || l.Charge(MeterContent, 200) {
		t.Fatal("the charge over the budget was let through")
	}
	if l.Charge(MeterContent, 10) {
		t.Error("a small charge still fitting under the budget passed after the crossing")
	}
	if !l.Charge(MeterOther, 10) {
		t.Error("the other budget was crossed with the content budget")
	}
}

func TestALargeUploadGetsItsRefusalNotAResetConnection(t *testing.T) {
	h := newHarness(t, limits, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(201) })
	// As a browser or a proxy does: the whole request is written before the answer is read.
	body := `{"type":"file","format":"text","content":"` + strings.Repeat("q", 40<<20) + `"}`
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.gate.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	request := fmt.Sprintf("PUT %sapi/contents/project/big.txt HTTP/1.1\r\nHost: x\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", prefix, len(body), body)
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatalf("the gate reset the connection while the upload was sent: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	var refusal map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&refusal)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || refusal["reason"] != "upload-cap" {
		t.Errorf("%d %v", resp.StatusCode, refusal)
	}
}
