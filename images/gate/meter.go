package main

// What reaches the browser, counted per person and workspace per day (UTC) against budgets,
// and the records the gate writes for every file served, every upload and every crossing.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Meter names one of the two daily budgets.
type Meter string

const (
	// MeterContent: file content read through the Contents API and output of kernels and
	// terminals: what carries data.
	MeterContent Meter = "content"
	// MeterOther: everything else the browser receives (the JupyterLab application itself,
	// listings, settings), on a budget of its own so that no route is unmetered.
	MeterOther Meter = "other"
)

// Limits are one tier's caps and budgets, in bytes.
type Limits struct {
	ReadCap       int64 // largest file the Contents API may send to the browser
	UploadCap     int64 // largest file a browser may put into the workspace
	ContentBudget int64 // file content and output per day
	OtherBudget   int64 // everything else per day
}

// usage is the ledger's persisted state: one day's counts.
type usage struct {
	Day     string          `json:"day"`
	Bytes   map[Meter]int64 `json:"bytes"`
	Crossed map[Meter]bool  `json:"crossed"`
}

// Ledger counts bytes against the budgets; safe for concurrent use. Its state file lives in a
// volume only the gate mounts, so a restarted gate carries on from its count.
type Ledger struct {
	mu       sync.Mutex
	limits   Limits
	state    usage
	file     string
	now      func() time.Time
	recorder *Recorder
	lastSave time.Time
	dirty    bool
}

// NewLedger reads the state file if there is one for today.
func NewLedger(limits Limits, file string, now func() time.Time, recorder *Recorder) *Ledger {
	l := &Ledger{limits: limits, file: file, now: now, recorder: recorder}
	l.state = freshUsage(l.today())
	if file != "" {
		if raw, err := os.ReadFile(file); err == nil {
			var saved usage
			if json.Unmarshal(raw, &saved) == nil && saved.Day == l.today() && saved.Bytes != nil {
				if saved.Crossed == nil {
					saved.Crossed = map[Meter]bool{}
				}
				l.state = saved
			}
		}
	}
	return l
}

func freshUsage(day string) usage {
	return usage{Day: day, Bytes: map[Meter]int64{}, Crossed: map[Meter]bool{}}
}

func (l *Ledger) today() string { return l.now().UTC().Format(time.DateOnly) }

func (l *Ledger) budget(m Meter) int64 {
	if m == MeterContent {
		return l.limits.ContentBudget
	}
	return l.limits.OtherBudget
}

// Charge counts n bytes on meter m if they fit the day's budget and reports whether they did.
// The first charge that does not fit marks the budget crossed for the rest of the day and
// writes the record once; the bytes are not counted (they are not sent).
func (l *Ledger) Charge(m Meter, n int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if day := l.today(); l.state.Day != day {
		l.state = freshUsage(day)
		l.dirty = true
	}
	used := l.state.Bytes[m]
	// Once crossed, the day's budget stays used up: what is left below it is not handed out
	// in smaller pieces.
	if l.state.Crossed[m] {
		return false
	}
	if used+n > l.budget(m) {
		if !l.state.Crossed[m] {
			l.state.Crossed[m] = true
			l.dirty = true
			l.recorder.Write("budget.crossed", map[string]any{
				"meter": m, "usedBytes": used, "budgetBytes": l.budget(m), "refusedBytes": n,
			})
			l.saveLocked()
		}
		return false
	}
	l.state.Bytes[m] = used + n
	l.dirty = true
	if l.now().Sub(l.lastSave) > time.Second {
		l.saveLocked()
	}
	return true
}

// CarryOver starts the day's count on meter m from at least used: what the person already
// used today in this workspace in earlier pods, as the platform counted it, so that a restarted
// server does not get a fresh budget. A budget that count reaches starts crossed, without a
// record: the platform already knows of that crossing.
func (l *Ledger) CarryOver(m Meter, used int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if day := l.today(); l.state.Day != day {
		l.state = freshUsage(day)
	}
	if used > l.state.Bytes[m] {
		l.state.Bytes[m] = used
		l.dirty = true
	}
	if l.state.Bytes[m] >= l.budget(m) && !l.state.Crossed[m] {
		l.state.Crossed[m] = true
		l.dirty = true
	}
}

// Usage is the day's counts as the gate reports them to the platform with every batch.
type Usage struct {
	Day     string `json:"day"`
	Content int64  `json:"content"`
	Other   int64  `json:"other"`
}

// Usage is the day's count on both meters.
func (l *Ledger) Usage() Usage {
	l.mu.Lock()
	defer l.mu.Unlock()
	day := l.today()
	if l.state.Day != day {
		return Usage{Day: day}
	}
	return Usage{Day: day, Content: l.state.Bytes[MeterContent], Other: l.state.Bytes[MeterOther]}
}

// Crossed reports whether meter m's budget was crossed today.
func (l *Ledger) Crossed(m Meter) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.Day == l.today() && l.state.Crossed[m]
}

// Used is the day's count on meter m.
func (l *Ledger) Used(m Meter) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state.Day != l.today() {
		return 0
	}
	return l.state.Bytes[m]
}

// Save writes the state file now (on shutdown).
func (l *Ledger) Save() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.saveLocked()
}

// saveLocked writes the state atomically (rename), so a gate killed mid-write keeps the last
// whole count. A failed write is recorded, never fatal: the counts in memory still hold.
func (l *Ledger) saveLocked() {
	l.lastSave = l.now()
	if l.file == "" || !l.dirty {
		return
	}
	raw, _ := json.Marshal(l.state)
	if err := writeAtomically(l.file, raw); err != nil {
		l.recorder.Write("gate.error", map[string]any{"detail": "could not save " + filepath.Base(l.file)})
		return
	}
	l.dirty = false
}
