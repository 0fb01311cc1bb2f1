// Command gate stands between the browser and a workspace's notebook server, in a container of
// its own in the notebook pod (its own user, a read-only root file system, a process namespace
// the notebook cannot see or signal). The hub routes to the gate's port; the notebook server
// listens on the pod's loopback only. The gate refuses raw file serving, downloads, exports
// and reads of the approved data, caps file reads and uploads, meters file content and output
// against a daily budget per person and workspace, and writes a record of every file served,
// every upload, every refusal and every budget crossing to its standard output, one JSON object
// a line, for the platform to collect. See README.md beside this file.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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
	recorder := &Recorder{out: os.Stdout, user: c.User, project: c.Project, now: now}
	state := ""
	if c.StateDir != "" {
		state = filepath.Join(c.StateDir, "ledger.json")
	}
	ledger := NewLedger(c.Limits, state, now, recorder)
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
