package main

// The shipper delivers the spool's records to the airlock, which appends them to the
// platform's audit chain: POST GATE_RECORDS_URL, a batch of records and the day's usage, with
// the pod's projected service-account token; the airlock answers with the highest number it
// has kept, and the spool drops everything up to it. Delivery is at least once: a batch whose
// answer is lost is sent again, and the airlock keeps a number once.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"
)

// A batch: at most this many records, at most this many bytes of body.
const (
	maxBatchRecords = 100
	maxBatchBytes   = 256 << 10
)

// Shipper sends the spool's records to the airlock. The timings are fields so that tests run
// them in milliseconds.
type Shipper struct {
	URL       string
	TokenFile string // re-read on every send: the kubelet rotates the token
	Spool     *Spool
	Usage     func() Usage
	Recorder  *Recorder // for its gate.error lines (standard output only)
	Client    *http.Client

	Coalesce   time.Duration // wait this long after the first new record for more
	Heartbeat  time.Duration // send at least this often, records or not
	MinBackoff time.Duration // first wait after a failure, doubled up to MaxBackoff
	MaxBackoff time.Duration
}

// NewShipper has the protocol's timings.
func NewShipper(url, tokenFile string, spool *Spool, usage func() Usage, recorder *Recorder) *Shipper {
	return &Shipper{
		URL: url, TokenFile: tokenFile, Spool: spool, Usage: usage, Recorder: recorder,
		Client:   &http.Client{Timeout: 10 * time.Second},
		Coalesce: time.Second, Heartbeat: time.Minute,
		MinBackoff: time.Second, MaxBackoff: time.Minute,
	}
}

// Run sends until ctx ends: records a moment after they come (at once when a batch is full),
// a heartbeat with the usage when there are none, and after a failure again and again, with
// a growing, jittered wait, keeping the records.
func (s *Shipper) Run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			if !sleep(ctx, backoff/2+rand.N(backoff/2+1)) {
				return
			}
		} else if !s.waitForWork(ctx) {
			return
		}
		err := s.send(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			backoff = 0
		default:
			if backoff == 0 { // one line per failure streak, not per retry
				n, _ := s.Spool.Pending()
				fields := map[string]any{"detail": err.Error(), "pendingRecords": n}
				var answer answerError
				if errors.As(err, &answer) {
					fields["status"], fields["detail"] = answer.status, answer.body
				}
				s.Recorder.Log("gate.error", fields)
			}
			backoff = min(max(2*backoff, s.MinBackoff), s.MaxBackoff)
		}
	}
}

// waitForWork returns when a batch is due: records have waited Coalesce, a full batch waits,
// or Heartbeat has passed. False when ctx ended.
func (s *Shipper) waitForWork(ctx context.Context) bool {
	heartbeat := time.NewTimer(s.Heartbeat)
	defer heartbeat.Stop()
	for {
		n, since := s.Spool.Pending()
		if n >= maxBatchRecords {
			return true
		}
		var due <-chan time.Time
		if n > 0 {
			wait := time.Until(since.Add(s.Coalesce))
			if wait <= 0 {
				return true
			}
			due = time.After(wait)
		}
		select {
		case <-ctx.Done():
			return false
		case <-heartbeat.C:
			return true
		case <-due:
			return true
		case <-s.Spool.Wake():
		}
	}
}

// Flush sends until the spool is empty, a send fails or ctx ends: the last attempt on SIGTERM.
func (s *Shipper) Flush(ctx context.Context) error {
	for {
		if err := s.send(ctx); err != nil {
			return err
		}
		if n, _ := s.Spool.Pending(); n == 0 {
			return nil
		}
	}
}

// answerError is an answer of the airlock other than an acknowledgement.
type answerError struct {
	status int
	body   string // at most 200 bytes of it
}

func (e answerError) Error() string {
	return fmt.Sprintf("the airlock answered %d: %s", e.status, e.body)
}

// send posts one batch (perhaps empty: a heartbeat) and drops what the airlock acknowledged.
func (s *Shipper) send(ctx context.Context) error {
	raw, err := os.ReadFile(s.TokenFile)
	token := strings.TrimSpace(string(raw))
	if err != nil || token == "" {
		return fmt.Errorf("no token in GATE_TOKEN_FILE %s", s.TokenFile)
	}
	// Whose and which workspace's, also in a heartbeat (which has no record to say so); the
	// airlock takes the project from the pod's namespace and refuses a batch that differs.
	who, _ := json.Marshal(map[string]string{"user": s.Recorder.user, "project": s.Recorder.project})
	usage, _ := json.Marshal(s.Usage())
	body := bytes.NewBuffer(who[:len(who)-1])
	body.WriteString(`,"usage":`)
	body.Write(usage)
	body.WriteString(`,"records":[`)
	records, last := s.Spool.Batch(maxBatchRecords, maxBatchBytes-body.Len()-2)
	body.Write(bytes.Join(records, []byte(",")))
	body.WriteString(`]}`)
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, body)
	if err != nil {
		return err
	}
	request.Header.Set("Authorization", "Bearer "+token)
	request.Header.Set("Content-Type", "application/json")
	response, err := s.Client.Do(request)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(response.Body, 4<<10))
	var ack struct {
		Acked *int64 `json:"acked"`
	}
	if response.StatusCode != http.StatusOK || json.Unmarshal(answer, &ack) != nil || ack.Acked == nil {
		return answerError{response.StatusCode, string(answer[:min(len(answer), 200)])}
	}
	if len(records) == 0 {
		return nil
	}
	// Never past what this batch carried: an acknowledgement of records the airlock has not
	// seen would drop them unsent.
	acked := min(*ack.Acked, last)
	before := s.Spool.LastAcked()
	if err := s.Spool.Ack(acked); err != nil {
		s.Recorder.Log("gate.error", map[string]any{"detail": err.Error()})
	}
	if acked <= before {
		return answerError{response.StatusCode, "acknowledged none of the records sent: " +
			string(answer[:min(len(answer), 200)])}
	}
	return nil
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
