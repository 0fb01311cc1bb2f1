package main

// The shipper against a stand-in airlock (httptest) that speaks the protocol: batches of
// numbered records with the usage, acknowledged by the highest number kept.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type batch struct {
	token   string
	size    int
	raw     string
	User    string           `json:"user"`
	Project string           `json:"project"`
	Usage   Usage            `json:"usage"`
	Records []map[string]any `json:"records"`
}

func (b batch) seqs() []int64 {
	var out []int64
	for _, r := range b.Records {
		out = append(out, int64(r["seq"].(float64)))
	}
	return out
}

// airlock is a stand-in receiver; answer decides each answer (nil: acknowledge everything).
type airlock struct {
	mu      sync.Mutex
	batches []batch
	answer  func(call int, b batch) (int, string)
}

func (a *airlock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	b := batch{token: r.Header.Get("Authorization"), size: len(raw), raw: string(raw)}
	if err := json.Unmarshal(raw, &b); err != nil || r.Header.Get("Content-Type") != "application/json" ||
		r.Method != http.MethodPost {
		http.Error(w, "bad batch", 400)
		return
	}
	a.mu.Lock()
	a.batches = append(a.batches, b)
	call := len(a.batches)
	a.mu.Unlock()
	status, body := 200, ""
	if a.answer != nil {
		status, body = a.answer(call, b)
	}
	if body == "" {
		seqs := b.seqs()
		last := int64(0)
		if len(seqs) > 0 {
			last = seqs[len(seqs)-1]
		}
		body = fmt.Sprintf(`{"acked": %d}`, last)
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (a *airlock) received() []batch {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]batch(nil), a.batches...)
}

// seen is every number the airlock was sent, with how often.
func (a *airlock) seen() map[int64]int {
	out := map[int64]int{}
	for _, b := range a.received() {
		for _, seq := range b.seqs() {
			out[seq]++
		}
	}
	return out
}

type shipping struct {
	spool    *Spool
	recorder *Recorder
	out      *bytes.Buffer // the gate's standard output
	shipper  *Shipper
	airlock  *airlock
	token    string // the token file
}

// newShipping wires a recorder, an in-memory spool and a shipper with millisecond timings to
// a stand-in airlock; run starts the shipper.
func newShipping(t *testing.T, a *airlock) *shipping {
	t.Helper()
	server := httptest.NewServer(a)
	t.Cleanup(server.Close)
	s := &shipping{spool: openSpool(t, "", true), out: &bytes.Buffer{}, airlock: a,
		token: filepath.Join(t.TempDir(), "token")}
	if err := os.WriteFile(s.token, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.recorder = NewRecorder(&syncWriter{w: s.out}, "rik", "heart", fixedNow, s.spool)
	usage := func() Usage { return Usage{Day: "2026-12-07", Content: 1234, Other: 56} }
	s.shipper = NewShipper(server.URL+"/api/gate/records", s.token, s.spool, usage, s.recorder)
	s.shipper.Coalesce, s.shipper.Heartbeat = 2*time.Millisecond, time.Hour
	s.shipper.MinBackoff, s.shipper.MaxBackoff = time.Millisecond, 4*time.Millisecond
	return s
}

func (s *shipping) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { s.shipper.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
}

func (s *shipping) write(n int) {
	for range n {
		s.recorder.Write("file.served", map[string]any{"path": "/project/a.csv"})
	}
}

// syncWriter lets the test read what the shipper goroutine writes.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// eventually waits for a condition the shipper brings about (a bound against a hang, not a
// timing that is asserted).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

func (s *shipping) drained() bool { n, _ := s.spool.Pending(); return n == 0 }

func TestRecordsGoInBatchesOfAtMostAHundredInOrder(t *testing.T) {
	s := newShipping(t, &airlock{})
	s.write(250)
	s.run(t)
	eventually(t, "the spool empties", s.drained)
	batches := s.airlock.received()
	var all []int64
	for _, b := range batches {
		if len(b.Records) > maxBatchRecords || b.token != "Bearer first-token" {
			t.Errorf("batch of %d records, %q", len(b.Records), b.token)
		}
		all = append(all, b.seqs()...)
	}
	if len(batches) != 3 || len(all) != 250 {
		t.Fatalf("%d batches, %d records", len(batches), len(all))
	}
	for i, seq := range all {
		if seq != int64(i+1) {
			t.Fatalf("record %d has number %d", i, seq)
		}
	}
	if got := batches[0].Records[0]; got["event"] != "file.served" || got["user"] != "rik" ||
		got["project"] != "heart" || got["path"] != "/project/a.csv" {
		t.Errorf("record as sent: %v", got)
	}
}

func TestAHundredWaitingRecordsGoAtOnce(t *testing.T) {
	s := newShipping(t, &airlock{})
	s.shipper.Coalesce = time.Hour // only a full batch can make it go
	s.run(t)
	s.write(99)
	s.write(1)
	eventually(t, "a full batch goes", func() bool { return len(s.airlock.seen()) == 100 })
}

func TestRecordsARestartedGateFindsGoAtOnce(t *testing.T) {
	dir := t.TempDir()
	NewRecorder(io.Discard, "rik", "heart", fixedNow, openSpool(t, dir, true)).Write("gate.started", nil)
	s := newShipping(t, &airlock{})
	s.spool = openSpool(t, dir, true)
	s.shipper.Spool, s.shipper.Coalesce = s.spool, time.Hour
	s.run(t)
	eventually(t, "the spooled record goes", s.drained)
}

func TestABatchStaysWithin256KiB(t *testing.T) {
	s := newShipping(t, &airlock{})
	for range 60 {
		s.recorder.Write("file.served", map[string]any{"path": "/" + strings.Repeat("p", 10<<10)})
	}
	s.run(t)
	eventually(t, "the spool empties", s.drained)
	total := 0
	for _, b := range s.airlock.received() {
		if b.size > maxBatchBytes {
			t.Errorf("a batch of %d bytes", b.size)
		}
		total += len(b.Records)
	}
	if total != 60 || len(s.airlock.received()) < 3 {
		t.Errorf("%d records in %d batches", total, len(s.airlock.received()))
	}
}

func TestAPartialAckSendsTheRestAgain(t *testing.T) {
	a := &airlock{answer: func(call int, b batch) (int, string) {
		if call == 1 {
			return 200, `{"acked": 2}`
		}
		return 200, ""
	}}
	s := newShipping(t, a)
	s.write(5)
	s.run(t)
	eventually(t, "the spool empties", s.drained)
	batches := a.received()
	if len(batches) != 2 || len(batches[0].Records) != 5 || batches[1].seqs()[0] != 3 ||
		len(batches[1].Records) != 3 {
		t.Errorf("batches: %d", len(batches))
	}
}

func TestAnAckNeverDropsRecordsTheBatchDidNotCarry(t *testing.T) {
	a := &airlock{answer: func(int, batch) (int, string) { return 200, `{"acked": 1000}` }}
	s := newShipping(t, a)
	s.write(3)
	if err := s.shipper.send(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.spool.LastAcked() != 3 {
		t.Errorf("acked %d, want 3", s.spool.LastAcked())
	}
}

func TestAFailingAirlockIsRetriedUntilEveryRecordIsDelivered(t *testing.T) {
	var mu sync.Mutex
	down := true
	a := &airlock{answer: func(int, batch) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return 502, strings.Repeat("upstream down ", 50)
		}
		return 200, ""
	}}
	s := newShipping(t, a)
	s.write(5)
	s.run(t)
	eventually(t, "three failed sends", func() bool { return len(a.received()) >= 3 })
	s.write(5) // records made while the airlock is down are kept too
	mu.Lock()
	down = false
	mu.Unlock()
	eventually(t, "the spool empties", s.drained)
	seen := s.airlock.seen()
	for seq := int64(1); seq <= 10; seq++ {
		if seen[seq] == 0 {
			t.Errorf("record %d never reached the airlock", seq)
		}
	}
	var errs []map[string]any
	for _, line := range lines(t, s.out) {
		if line["event"] == "gate.error" {
			errs = append(errs, line)
		}
	}
	if len(errs) != 1 || errs[0]["status"] != float64(502) || len(errs[0]["detail"].(string)) > 200 ||
		errs[0]["seq"] != nil {
		t.Errorf("one gate.error line per failure streak, with at most 200 bytes: %v", errs)
	}
}

func TestAnUnreachableAirlockKeepsTheRecords(t *testing.T) {
	s := newShipping(t, &airlock{})
	s.shipper.URL = "http://127.0.0.1:1/api/gate/records" // nothing listens there
	s.write(2)
	if err := s.shipper.send(context.Background()); err == nil {
		t.Fatal("a send to nowhere succeeded")
	}
	if n, _ := s.spool.Pending(); n != 2 {
		t.Errorf("%d records left, want 2", n)
	}
}

func TestTheHeartbeatCarriesTheUsage(t *testing.T) {
	s := newShipping(t, &airlock{})
	s.shipper.Heartbeat = time.Millisecond
	s.run(t)
	eventually(t, "a heartbeat", func() bool { return len(s.airlock.received()) > 0 })
	b := s.airlock.received()[0]
	// whose it is, even without a record to say so
	if b.User != "rik" || b.Project != "heart" || b.Usage != (Usage{"2026-12-07", 1234, 56}) ||
		!strings.Contains(b.raw, `"records":[]`) {
		t.Errorf("heartbeat: %s", b.raw)
	}
}

func TestTheTokenIsReadAgainForEverySend(t *testing.T) {
	s := newShipping(t, &airlock{})
	ctx := context.Background()
	if err := s.shipper.send(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.token, []byte("rotated-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.shipper.send(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.token); err != nil {
		t.Fatal(err)
	}
	if err := s.shipper.send(ctx); err == nil || !strings.Contains(err.Error(), "GATE_TOKEN_FILE") {
		t.Errorf("send without a token: %v", err)
	}
	batches := s.airlock.received()
	if len(batches) != 2 || batches[0].token != "Bearer first-token" ||
		batches[1].token != "Bearer rotated-token" {
		t.Errorf("batches: %v", batches)
	}
}

func TestStoppingDeliversWhatIsLeft(t *testing.T) {
	s := newShipping(t, &airlock{})
	s.shipper.Coalesce = time.Hour // only the last attempt on the way out sends
	stop := startShipping(s.shipper)
	s.write(50)
	stop()
	if !s.drained() || len(s.airlock.seen()) != 50 {
		t.Errorf("%d records delivered on the way out", len(s.airlock.seen()))
	}
}
