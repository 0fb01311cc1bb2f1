// Command gate stands between the browser and a workspace's notebook server, in a container of
// its own in the notebook pod (its own user, a read-only root file system, a process namespace
// the notebook cannot see or signal). The hub routes to the gate's port; the notebook server
// listens on the pod's loopback only. The gate refuses raw file serving, downloads, exports
// and reads of the approved data, caps file reads and uploads, meters file content and output
// against a daily budget per person and workspace, and writes a record of every file served,
// every upload, every refusal and every budget crossing to its standard output, one JSON object
// a line. When the platform collects them (GATE_RECORDS_URL), it also keeps them in a spool in
// its state volume and sends them to the airlock until acknowledged, and closes to the browser
// while they cannot be delivered. See README.md beside this file.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config is what the hub sets in the gate's environment at each start.
type Config struct {
	Listen   string
	Upstream string
	Prefix   string
	User     string
	Project  string
	Limits   Limits
	StateDir string
	// Where the records go (optional: without it, to standard output only) and the
	// projected service-account token the gate shows there.
	RecordsURL string
	TokenFile  string
	// What the person already used today in this workspace in earlier pods.
	ContentUsed int64
	OtherUsed   int64
}

func env(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return fallback
}

func bytesFrom(name string) (int64, error) {
	raw, ok := os.LookupEnv(name)
	if !ok {
		return 0, fmt.Errorf("%s is not set: the hub sets it from the workspace's tier", name)
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: %q is not a number of bytes", name, raw)
	}
	return n, nil
}

// LoadConfig reads the environment; a missing or malformed value is an error naming it: the
// gate never starts with a guessed limit.
func LoadConfig() (Config, error) {
	c := Config{
		Listen:   env("GATE_LISTEN", ":8888"),
		Upstream: env("GATE_UPSTREAM", "127.0.0.1:8890"),
		Prefix:   os.Getenv("GATE_PREFIX"),
		User:     os.Getenv("GATE_USER"),
		Project:  os.Getenv("GATE_PROJECT"),
		StateDir: os.Getenv("GATE_STATE_DIR"),
	}
	for name, value := range map[string]string{
		"GATE_PREFIX": c.Prefix, "GATE_USER": c.User, "GATE_PROJECT": c.Project,
	} {
		if value == "" {
			return c, fmt.Errorf("%s is not set: the hub sets it at each start", name)
		}
	}
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		return c, fmt.Errorf("GATE_PREFIX: %q must start and end with /", c.Prefix)
	}
	for name, target := range map[string]*int64{
		"GATE_READ_CAP": &c.Limits.ReadCap, "GATE_UPLOAD_CAP": &c.Limits.UploadCap,
		"GATE_CONTENT_BUDGET": &c.Limits.ContentBudget, "GATE_OTHER_BUDGET": &c.Limits.OtherBudget,
	} {
		n, err := bytesFrom(name)
		if err != nil {
			return c, err
		}
		*target = n
	}
	for name, target := range map[string]*int64{
		"GATE_CONTENT_USED": &c.ContentUsed, "GATE_OTHER_USED": &c.OtherUsed,
	} {
		if _, set := os.LookupEnv(name); !set {
			continue // a first pod of the day
		}
		n, err := bytesFrom(name)
		if err != nil {
			return c, err
		}
		*target = n
	}
	c.RecordsURL = os.Getenv("GATE_RECORDS_URL")
	c.TokenFile = os.Getenv("GATE_TOKEN_FILE")
	if c.RecordsURL != "" {
		u, err := url.Parse(c.RecordsURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("GATE_RECORDS_URL: %q is not an http(s) URL", c.RecordsURL)
		}
		if c.TokenFile == "" {
			return c, errors.New("GATE_TOKEN_FILE is not set: with GATE_RECORDS_URL the gate " +
				"needs the projected service-account token it shows the airlock")
		}
		if c.StateDir == "" {
			return c, errors.New("GATE_STATE_DIR is not set: with GATE_RECORDS_URL the gate " +
				"keeps its records there until the airlock has them")
		}
	}
	return c, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-version" {
		fmt.Println("tre-gate", version)
		return
	}
	config, err := LoadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tre-gate:", err)
		os.Exit(2)
	}
	if err := run(config); err != nil {
		fmt.Fprintln(os.Stderr, "tre-gate:", err)
		os.Exit(1)
	}
}

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

func run(c Config) error {
	now := time.Now
	spool, err := OpenSpool(c.StateDir, c.RecordsURL != "")
	if err != nil {
		return fmt.Errorf("the record spool in %s: %w", c.StateDir, err)
	}
	recorder := NewRecorder(os.Stdout, c.User, c.Project, now, spool)
	state := ""
	if c.StateDir != "" {
		state = filepath.Join(c.StateDir, "ledger.json")
	}
	ledger := NewLedger(c.Limits, state, now, recorder)
	ledger.CarryOver(MeterContent, c.ContentUsed)
	ledger.CarryOver(MeterOther, c.OtherUsed)
	if c.RecordsURL != "" {
		shipper := NewShipper(c.RecordsURL, c.TokenFile, spool, ledger.Usage, recorder)
		defer startShipping(shipper)()
	}
	gate := NewGate(c.Upstream, c.Prefix, c.Limits, ledger, recorder, now)
	// Without SO_REUSEPORT: no other user's process can bind this port beside the gate.
	listener, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.Listen, err)
	}
	server := &http.Server{
		Handler:           gate,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	recorder.Write("gate.started", map[string]any{
		"listen": c.Listen, "upstream": c.Upstream, "readCap": c.Limits.ReadCap,
		"uploadCap": c.Limits.UploadCap, "contentBudget": c.Limits.ContentBudget,
		"otherBudget": c.Limits.OtherBudget, "contentUsed": ledger.Used(MeterContent),
		"otherUsed": ledger.Used(MeterOther), "recordsTo": c.RecordsURL,
	})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- server.Serve(listener) }()
	select {
	case err := <-done:
		ledger.Save()
		return err
	case <-stop:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = server.Shutdown(ctx)
	ledger.Save()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// startShipping runs the shipper until the returned function is called (on the way out), which
// stops it and makes one last, brief attempt to deliver what the last requests recorded; what
// is left stays in the spool for the next gate container of the pod.
func startShipping(shipper *Shipper) func() {
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { shipper.Run(ctx); close(stopped) }()
	return func() {
		stop()
		<-stopped
		last, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = shipper.Flush(last)
	}
}
