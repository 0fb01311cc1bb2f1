package main

// The gate's records: one JSON object a line on its standard output, each numbered (`seq`)
// and, when the platform collects them (GATE_RECORDS_URL), kept in a spool in the gate's state
// volume until the airlock acknowledges them (shipper.go). A record that cannot be kept must
// not become an unrecorded file served: a full spool closes the gate (Gate.ServeHTTP).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Recorder writes one JSON object a line: the gate's records, which the platform collects
// into the audit chain. Each names the person and the workspace and has a number, strictly
// increasing within the pod.
type Recorder struct {
	mu      sync.Mutex
	out     io.Writer
	user    string
	project string
	now     func() time.Time
	seq     int64  // the last number handed out
	spool   *Spool // nil: numbered in memory, written to out only (tests)
}

// NewRecorder numbers its records on from the spool's last one, so a restarted gate container
// in the same pod continues the sequence.
func NewRecorder(out io.Writer, user, project string, now func() time.Time, spool *Spool) *Recorder {
	return &Recorder{out: out, user: user, project: project, now: now, seq: spool.LastSeq(),
		spool: spool}
}

// Write records one event with its fields: numbered, kept in the spool, written to out.
func (r *Recorder) Write(event string, fields map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	record := r.record(event, fields)
	record["seq"] = r.seq
	line := cutRecord(record)
	if err := r.spool.Append(r.seq, line); err != nil {
		// Still in memory and still shipped; only a restart of the gate before delivery
		// would lose it.
		r.logLocked("gate.error", map[string]any{"detail": err.Error()})
	}
	_, _ = r.out.Write(append(line, '\n'))
}

// Log writes a line to out only, without a number: what the gate says about delivering its
// records (sending it through the channel that is failing would be circular) and the refusals
// of a closed gate (which must not grow a full spool).
func (r *Recorder) Log(event string, fields map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logLocked(event, fields)
}

func (r *Recorder) logLocked(event string, fields map[string]any) {
	line, _ := json.Marshal(r.record(event, fields))
	_, _ = r.out.Write(append(line, '\n'))
}

func (r *Recorder) record(event string, fields map[string]any) map[string]any {
	record := map[string]any{
		"event": event, "user": r.user, "project": r.project,
		"at": r.now().UTC().Format(time.RFC3339Nano),
	}
	for k, v := range fields {
		record[k] = v
	}
	return record
}

// Undeliverable reports whether the spool is full: the gate then refuses the browser until
// the airlock has taken records off it.
func (r *Recorder) Undeliverable() bool { return r.spool.Full() }

// A record fits a batch with room for the envelope; the gate's records are a few hundred bytes
// (a path, a hash), so only a path near the header size limit could come close.
const (
	maxRecordBytes   = maxBatchBytes - 4<<10
	truncatedStrings = 1 << 10
)

// cutRecord marshals a record, cutting its long strings (marked "truncated") if it would not
// fit a batch: the airlock gets every record, if need be shortened, never none.
func cutRecord(record map[string]any) []byte {
	line, _ := json.Marshal(record)
	if len(line) <= maxRecordBytes {
		return line
	}
	for k, v := range record {
		if s, ok := v.(string); ok && len(s) > truncatedStrings {
			record[k] = strings.ToValidUTF8(s[:truncatedStrings], "")
		}
	}
	record["truncated"] = true
	line, _ = json.Marshal(record)
	return line
}

// Spool file names in the gate's state directory.
const (
	spoolFile = "records.jsonl" // records not yet acknowledged, one a line (and some that are)
	ackedFile = "acked"         // the highest number the airlock has acknowledged
)

// Spool keeps the records the airlock has not acknowledged, in memory and in a file of the
// gate's state volume, so they survive a restart of the gate container; safe for concurrent
// use. Without a directory it keeps them in memory only (tests); without delivery (no
// GATE_RECORDS_URL) it keeps only the last number, so the sequence still carries on.
type Spool struct {
	mu      sync.Mutex
	dir     string
	deliver bool
	pending []spooled
	bytes   int64 // of pending
	acked   int64
	last    int64 // the highest number spooled or acknowledged
	dead    int64 // bytes of acknowledged records still in the file
	since   time.Time
	wake    chan struct{}

	// Bounds past which the gate closes (a soft bound: records of requests already under way
	// are still kept; a closed gate makes no new ones).
	MaxRecords int
	MaxBytes   int64
}

type spooled struct {
	seq  int64
	line []byte
}

// Spool bounds: far above a day's records of one person (a few hundred), within the gate's
// memory limit and its state volume.
const (
	maxSpoolRecords = 10_000
	maxSpoolBytes   = 16 << 20
	compactAfter    = 1 << 20 // acknowledged bytes left in the file before it is rewritten
)

// OpenSpool loads what a previous gate container of the pod left in dir: the acknowledged
// number and the records after it. A line cut by a kill in the middle of a write is dropped
// (its record was written to standard output too).
func OpenSpool(dir string, deliver bool) (*Spool, error) {
	s := &Spool{dir: dir, deliver: deliver, wake: make(chan struct{}, 1),
		MaxRecords: maxSpoolRecords, MaxBytes: maxSpoolBytes}
	if dir == "" {
		return s, nil
	}
	if raw, err := os.ReadFile(filepath.Join(dir, ackedFile)); err == nil {
		s.acked, err = strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a number", ackedFile, raw)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	s.last = s.acked
	file, err := os.Open(filepath.Join(dir, spoolFile))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	} else if err != nil {
		return nil, err
	}
	defer file.Close()
	lines := bufio.NewScanner(file)
	lines.Buffer(nil, maxBatchBytes)
	for lines.Scan() {
		var numbered struct {
			Seq int64 `json:"seq"`
		}
		if json.Unmarshal(lines.Bytes(), &numbered) != nil || numbered.Seq <= 0 {
			continue
		}
		s.last = max(s.last, numbered.Seq)
		if numbered.Seq > s.acked {
			line := bytes.Clone(lines.Bytes())
			s.pending = append(s.pending, spooled{numbered.Seq, line})
			s.bytes += int64(len(line))
		}
	}
	if err := lines.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", spoolFile, err)
	}
	// The records found have waited long enough (s.since stays zero): they go at once.
	// Start from a clean file: without acknowledged records and cut lines.
	if err := s.rewriteLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

// LastSeq is the highest number this pod's gate has handed out (0: none yet).
func (s *Spool) LastSeq() int64 {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Append keeps record seq until it is acknowledged and wakes the shipper. An error means the
// file could not be written; the record is kept in memory all the same.
func (s *Spool) Append(seq int64, line []byte) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = seq
	if !s.deliver {
		// Nobody acknowledges: the number alone is kept, for the next gate container.
		s.acked = seq
		return s.writeAckedLocked()
	}
	if len(s.pending) == 0 {
		s.since = time.Now()
	}
	s.pending = append(s.pending, spooled{seq, line})
	s.bytes += int64(len(line))
	select {
	case s.wake <- struct{}{}:
	default:
	}
	if s.dir == "" {
		return nil
	}
	file, err := os.OpenFile(filepath.Join(s.dir, spoolFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("could not keep record %d in the spool: %w", seq, err)
	}
	_, err = file.Write(append(line, '\n'))
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("could not keep record %d in the spool: %w", seq, err)
	}
	return nil
}

// Pending is how many records wait, and since when the oldest of them has.
func (s *Spool) Pending() (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending), s.since
}

// Full reports whether the spool has reached a bound.
func (s *Spool) Full() bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) >= s.MaxRecords || s.bytes >= s.MaxBytes
}

// Batch is the oldest waiting records, at most maxRecords of them and maxBytes together
// (commas included), and the number of the last one (0: none).
func (s *Spool) Batch(maxRecords int, maxBytes int) ([][]byte, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines [][]byte
	size, last := 0, int64(0)
	for _, record := range s.pending {
		if len(lines) == maxRecords || size+len(record.line)+1 > maxBytes {
			break
		}
		lines = append(lines, record.line)
		size += len(record.line) + 1
		last = record.seq
	}
	return lines, last
}

// Ack drops every record up to seq. The number is written first: a gate killed between the two
// writes finds the records in the file and skips them by the number, and never numbers from
// below what the airlock has seen. The file is rewritten once empty, or once its acknowledged
// part passes compactAfter.
func (s *Spool) Ack(seq int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.acked {
		return nil
	}
	s.acked = seq
	kept := 0
	for kept < len(s.pending) && s.pending[kept].seq <= seq {
		s.bytes -= int64(len(s.pending[kept].line))
		s.dead += int64(len(s.pending[kept].line)) + 1
		kept++
	}
	// The oldest record left (if any) has waited since before: it goes with the next batch.
	s.pending = s.pending[kept:]
	if err := s.writeAckedLocked(); err != nil {
		return err
	}
	if len(s.pending) == 0 || s.dead > compactAfter {
		return s.rewriteLocked()
	}
	return nil
}

// LastAcked is the highest number the airlock has acknowledged.
func (s *Spool) LastAcked() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// Wake receives after a record was appended.
func (s *Spool) Wake() <-chan struct{} { return s.wake }

func (s *Spool) writeAckedLocked() error {
	if s.dir == "" {
		return nil
	}
	return writeAtomically(filepath.Join(s.dir, ackedFile), []byte(strconv.FormatInt(s.acked, 10)))
}

func (s *Spool) rewriteLocked() error {
	if s.dir == "" {
		return nil
	}
	var buf bytes.Buffer
	for _, record := range s.pending {
		buf.Write(record.line)
		buf.WriteByte('\n')
	}
	if err := writeAtomically(filepath.Join(s.dir, spoolFile), buf.Bytes()); err != nil {
		return err
	}
	s.dead = 0
	return nil
}

// writeAtomically writes a temporary file and renames it over the file, so a gate killed in the
// middle leaves the previous whole file.
func writeAtomically(file string, data []byte) error {
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("could not write %s: %w", filepath.Base(file), err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("could not write %s: %w", filepath.Base(file), err)
	}
	return nil
}
