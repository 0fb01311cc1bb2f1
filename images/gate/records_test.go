package main

// The records' numbers and spool, the fail-closed gate and the usage carried over from earlier
// pods (the shipper's protocol is in shipper_test.go).

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func lines(t *testing.T, out *bytes.Buffer) []map[string]any {
	t.Helper()
	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var record map[string]any
		if err := json.Unmarshal([]byte(line), &record); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		records = append(records, record)
	}
	return records
}

func openSpool(t *testing.T, dir string, deliver bool) *Spool {
	t.Helper()
	spool, err := OpenSpool(dir, deliver)
	if err != nil {
		t.Fatal(err)
	}
	return spool
}

func TestRecordsAreNumberedAndARestartedGateCarriesOnFromItsSpool(t *testing.T) {
	dir := t.TempDir()
	out := &bytes.Buffer{}
	first := NewRecorder(out, "rik", "heart", fixedNow, openSpool(t, dir, true))
	for range 3 {
		first.Write("file.served", map[string]any{"path": "/a.csv"})
	}
	for i, record := range lines(t, out) {
		if record["seq"] != float64(i+1) || record["user"] != "rik" {
			t.Errorf("line %d: %v", i, record)
		}
	}
	// A gate killed in the middle of a write leaves a cut line: dropped, not fatal.
	file, _ := os.OpenFile(filepath.Join(dir, spoolFile), os.O_WRONLY|os.O_APPEND, 0)
	_, _ = file.WriteString(`{"event":"file.ser`)
	file.Close()

	spool := openSpool(t, dir, true)
	if n, _ := spool.Pending(); n != 3 || spool.LastSeq() != 3 {
		t.Fatalf("restarted spool: %d pending, last %d", n, spool.LastSeq())
	}
	out.Reset()
	second := NewRecorder(out, "rik", "heart", fixedNow, spool)
	second.Write("upload.received", map[string]any{"path": "/b.csv"})
	if seq := lines(t, out)[0]["seq"]; seq != float64(4) {
		t.Errorf("the restarted gate numbered from %v, want 4", seq)
	}
	// Everything acknowledged: the spool file empties and the number still carries on.
	if err := spool.Ack(4); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, spoolFile)); len(raw) != 0 {
		t.Errorf("spool file after the last ack: %q", raw)
	}
	if third := openSpool(t, dir, true); third.LastSeq() != 4 {
		t.Errorf("after an empty spool the number restarted at %d", third.LastSeq())
	}
}

func TestWithoutDeliveryOnlyTheNumberIsKept(t *testing.T) {
	dir := t.TempDir()
	first := NewRecorder(io.Discard, "rik", "heart", fixedNow, openSpool(t, dir, false))
	first.Write("gate.started", nil)
	first.Write("gate.started", nil)
	spool := openSpool(t, dir, false)
	if n, _ := spool.Pending(); n != 0 || spool.LastSeq() != 2 || spool.Full() {
		t.Errorf("stdout-only spool: %d pending, last %d", n, spool.LastSeq())
	}
	if _, err := os.Stat(filepath.Join(dir, spoolFile)); err == nil {
		t.Error("records spooled with nobody to deliver them to")
	}
}

func TestARecordTooLargeForABatchIsCutNotLost(t *testing.T) {
	out := &bytes.Buffer{}
	spool := openSpool(t, "", true)
	r := NewRecorder(out, "rik", "heart", fixedNow, spool)
	r.Write("request.refused", map[string]any{"path": strings.Repeat("é", maxBatchBytes), "rule": "x"})
	record := lines(t, out)[0]
	path, _ := record["path"].(string)
	if record["truncated"] != true || record["rule"] != "x" || len(path) > truncatedStrings {
		t.Errorf("cut record: truncated=%v rule=%v path of %d bytes", record["truncated"],
			record["rule"], len(path))
	}
	if batch, _ := spool.Batch(maxBatchRecords, maxBatchBytes); len(batch) != 1 {
		t.Errorf("the cut record is not in a batch: %d", len(batch))
	}
}

func TestAFullSpoolClosesTheGateUntilTheRecordsAreDelivered(t *testing.T) {
	spool := openSpool(t, "", true)
	spool.MaxRecords = 2
	h := newSpooledHarness(t, limits, spool, contents("a,b\n"))
	h.ledger.recorder.Write("file.served", map[string]any{"path": "/a.csv"})
	h.ledger.recorder.Write("file.served", map[string]any{"path": "/b.csv"})

	for _, path := range []string{prefix + "api/contents/project/a.csv", prefix + "files/a.csv", "/hub/x"} {
		status, body, _ := get(t, h.gate.URL+path)
		if status != http.StatusServiceUnavailable || body["reason"] != "records-undeliverable" ||
			!strings.Contains(body["message"].(string), "cannot be delivered; ask the platform team") {
			t.Errorf("%s with a full spool: %d %v", path, status, body)
		}
	}
	status, _ := put(t, h.gate.URL+prefix+"api/contents/project/up.csv",
		map[string]any{"type": "file", "format": "text", "content": "abc"})
	if status != http.StatusServiceUnavailable {
		t.Errorf("upload with a full spool: %d", status)
	}
	if len(h.received) != 0 {
		t.Errorf("the notebook server was asked %d times", len(h.received))
	}
	// JupyterLab itself still loads, to show the refusal; it makes no record.
	if status, _, _ := get(t, h.gate.URL+prefix+"lab"); status != http.StatusOK {
		t.Errorf("lab with a full spool: %d", status)
	}
	// The refusals are on standard output but do not grow the full spool.
	if n, _ := spool.Pending(); n != 2 {
		t.Errorf("%d records spooled, want 2", n)
	}
	if refused := h.events("request.refused"); len(refused) != 4 || refused[0]["seq"] != nil {
		t.Errorf("refusals on standard output: %v", refused)
	}
	if err := spool.Ack(2); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := get(t, h.gate.URL+prefix+"api/contents/project/a.csv"); status != http.StatusOK {
		t.Errorf("read once the records are delivered: %d", status)
	}
}

func TestWhatEarlierPodsUsedTodayCarriesIntoTheLedger(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ledger.json")
	out := &bytes.Buffer{}
	rec := NewRecorder(out, "rik", "heart", fixedNow, nil)
	first := NewLedger(limits, file, fixedNow, rec)
	first.Charge(MeterContent, 1000)
	first.Save()

	// The state file's count wins over a smaller one from the platform, and the other way round.
	l := NewLedger(limits, file, fixedNow, rec)
	l.CarryOver(MeterContent, 500)
	l.CarryOver(MeterOther, 7000)
	if usage := l.Usage(); usage != (Usage{"2026-12-07", 1000, 7000}) || l.Crossed(MeterContent) {
		t.Errorf("usage %+v", usage)
	}
	// A budget the platform's count reaches starts crossed: refused like today, no new record.
	h := newHarness(t, limits, contents("a,b\n"))
	h.ledger.CarryOver(MeterContent, limits.ContentBudget)
	status, body, _ := get(t, h.gate.URL+prefix+"api/contents/project/a.csv")
	if status != http.StatusTooManyRequests || body["reason"] != "budget" {
		t.Errorf("read past the carried-over budget: %d %v", status, body)
	}
	if crossed := h.events("budget.crossed"); len(crossed) != 0 {
		t.Errorf("crossing recorded again: %v", crossed)
	}
}

func setGateEnv(t *testing.T) {
	t.Helper()
	for name, value := range map[string]string{
		"GATE_PREFIX": prefix, "GATE_USER": "rik", "GATE_PROJECT": "heart",
		"GATE_READ_CAP": "1024", "GATE_UPLOAD_CAP": "1024", "GATE_CONTENT_BUDGET": "4096",
		"GATE_OTHER_BUDGET": "65536", "GATE_STATE_DIR": t.TempDir(),
	} {
		t.Setenv(name, value)
	}
}

func TestLoadConfigReadsTheRecordsSettingsAndNamesWhatIsMissing(t *testing.T) {
	setGateEnv(t)
	c, err := LoadConfig()
	if err != nil || c.RecordsURL != "" || c.ContentUsed != 0 {
		t.Fatalf("without records settings: %+v %v", c, err)
	}
	t.Setenv("GATE_CONTENT_USED", "3000")
	t.Setenv("GATE_OTHER_USED", "12")
	t.Setenv("GATE_RECORDS_URL", "http://tre-airlock.tre-airlock.svc:8080/api/gate/records")
	if _, err := LoadConfig(); err == nil || !strings.Contains(err.Error(), "GATE_TOKEN_FILE") {
		t.Errorf("records URL without a token file: %v", err)
	}
	t.Setenv("GATE_TOKEN_FILE", "/var/run/secrets/tre/token")
	if c, err = LoadConfig(); err != nil || c.ContentUsed != 3000 || c.OtherUsed != 12 {
		t.Errorf("%+v %v", c, err)
	}
	for name, value := range map[string]string{
		"GATE_RECORDS_URL": "tre-airlock:8080/records", "GATE_OTHER_USED": "-1",
		"GATE_STATE_DIR": "",
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, value)
			if _, err := LoadConfig(); err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%q: %v", name, value, err)
			}
		})
	}
}
