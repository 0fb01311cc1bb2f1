package main

// Websockets from the notebook server to the browser (kernels, terminals, events), read frame
// by frame (RFC 6455) so that every byte of output is metered, and output past the budget is
// cut with a message the person sees where the output would have been.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"time"
)

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	// A frame the gate reads whole to judge it after the cut; a larger one is dropped unread.
	maxJudgedFrame = 1 << 20
	// Close code "policy violation" (RFC 6455 7.4.1).
	closePolicy = 1008
)

var errFragmentCut = errors.New("output budget crossed inside a fragmented message")

type frameHeader struct {
	fin    bool
	opcode byte
	masked bool
	mask   [4]byte
	length uint64
}

func readFrameHeader(r *bufio.Reader) (frameHeader, error) {
	var h frameHeader
	var b [2]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return h, err
	}
	h.fin = b[0]&0x80 != 0
	h.opcode = b[0] & 0x0f
	h.masked = b[1]&0x80 != 0
	switch n := b[1] & 0x7f; n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return h, err
		}
		h.length = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return h, err
		}
		h.length = binary.BigEndian.Uint64(ext[:])
	default:
		h.length = uint64(n)
	}
	if h.masked {
		if _, err := io.ReadFull(r, h.mask[:]); err != nil {
			return h, err
		}
	}
	return h, nil
}

func encodeFrameHeader(h frameHeader) []byte {
	out := make([]byte, 0, 14)
	b0 := h.opcode
	if h.fin {
		b0 |= 0x80
	}
	out = append(out, b0)
	var maskBit byte
	if h.masked {
		maskBit = 0x80
	}
	switch {
	case h.length < 126:
		out = append(out, maskBit|byte(h.length))
	case h.length <= 0xffff:
		out = append(out, maskBit|126, byte(h.length>>8), byte(h.length))
	default:
		out = append(out, maskBit|127)
		out = binary.BigEndian.AppendUint64(out, h.length)
	}
	if h.masked {
		out = append(out, h.mask[:]...)
	}
	return out
}

// writeFrame sends one whole unmasked frame (a server's frames are never masked).
func writeFrame(w io.Writer, opcode byte, payload []byte) error {
	header := encodeFrameHeader(frameHeader{fin: true, opcode: opcode, length: uint64(len(payload))})
	_, err := w.Write(append(header, payload...))
	return err
}

func unmask(h frameHeader, payload []byte) {
	if h.masked {
		for i := range payload {
			payload[i] ^= h.mask[i%4]
		}
	}
}

// cutter decides, once the content budget is crossed, what of a socket's traffic still
// reaches the browser: the frames that keep the application working, never output.
type cutter interface {
	// judge returns the frames to send instead of one whole text frame's payload.
	judge(payload []byte) [][]byte
}

// PumpToBrowser copies frames from the notebook server to the browser. Before the budget is
// crossed every data frame is charged and streamed as it is; the first frame that does not fit
// switches the socket to cut mode for good, in which only whole text frames the cutter passes
// (or makes) are sent, and everything else is dropped unread.
func PumpToBrowser(dst io.Writer, src *bufio.Reader, ledger *Ledger, cut cutter) error {
	cutMode := false
	inFragment := false // a fragmented message started before the cut is still being sent
	for {
		h, err := readFrameHeader(src)
		if err != nil {
			return err
		}
		if h.opcode >= opClose { // control frames: at most 125 bytes, passed as they are
			payload := make([]byte, h.length)
			if _, err := io.ReadFull(src, payload); err != nil {
				return err
			}
			if _, err := dst.Write(append(encodeFrameHeader(h), payload...)); err != nil {
				return err
			}
			if h.opcode == opClose {
				return nil
			}
			continue
		}
		if !cutMode && !ledger.Charge(MeterContent, int64(h.length)) {
			cutMode = true
			if inFragment {
				_ = writeClose(dst, "output budget for today used up")
				return errFragmentCut
			}
		}
		if !cutMode {
			if _, err := dst.Write(encodeFrameHeader(h)); err != nil {
				return err
			}
			if _, err := io.CopyN(dst, src, int64(h.length)); err != nil {
				return err
			}
			inFragment = !h.fin
			continue
		}
		if h.opcode != opText || !h.fin || h.length > maxJudgedFrame {
			if _, err := io.CopyN(io.Discard, src, int64(h.length)); err != nil {
				return err
			}
			continue
		}
		payload := make([]byte, h.length)
		if _, err := io.ReadFull(src, payload); err != nil {
			return err
		}
		unmask(h, payload)
		for _, out := range cut.judge(payload) {
			if err := writeFrame(dst, opText, out); err != nil {
				return err
			}
		}
	}
}

func writeClose(w io.Writer, reason string) error {
	payload := binary.BigEndian.AppendUint16(nil, closePolicy)
	if len(reason) > 120 {
		reason = reason[:120]
	}
	return writeFrame(w, opClose, append(payload, reason...))
}

// --- kernels: Jupyter messages in the JSON websocket protocol ------------------------------

// Messages that keep a notebook working and carry no output: they still pass after the cut.
// Everything else from the kernel (stream, display_data, execute_result, error, comm traffic,
// completions, inspections, history) is dropped.
var kernelPassAfterCut = map[string]bool{
	"status": true, "execute_input": true, "execute_reply": true, "kernel_info_reply": true,
	"shutdown_reply": true, "interrupt_reply": true, "is_complete_reply": true,
	"clear_output": true, "comm_info_reply": true, "input_request": true,
}

type kernelCutter struct {
	message  string
	notified map[string]bool // parent msg_ids already told of the cut
	now      func() time.Time
}

func newKernelCutter(message string, now func() time.Time) *kernelCutter {
	return &kernelCutter{message: message, notified: map[string]bool{}, now: now}
}

func (k *kernelCutter) judge(payload []byte) [][]byte {
	var msg map[string]any
	if json.Unmarshal(payload, &msg) != nil {
		return nil
	}
	header, _ := msg["header"].(map[string]any)
	msgType, _ := header["msg_type"].(string)
	if kernelPassAfterCut[msgType] {
		if content, ok := msg["content"].(map[string]any); ok {
			// Pager payloads (help text, %less) and an input prompt's text can carry data.
			if _, has := content["payload"]; has {
				content["payload"] = []any{}
			}
			if msgType == "input_request" {
				content["prompt"] = ""
			}
		}
		out, err := json.Marshal(msg)
		if err != nil {
			return nil
		}
		return [][]byte{out}
	}
	parent, _ := msg["parent_header"].(map[string]any)
	parentID, _ := parent["msg_id"].(string)
	if parentID == "" || k.notified[parentID] {
		return nil
	}
	if len(k.notified) > 1000 {
		k.notified = map[string]bool{}
	}
	k.notified[parentID] = true
	return [][]byte{k.notice(parent, msg)}
}

// notice is a stderr stream message under the cell whose output was cut.
func (k *kernelCutter) notice(parent, original map[string]any) []byte {
	var id [16]byte
	_, _ = rand.Read(id[:])
	session, _ := parent["session"].(string)
	header := map[string]any{
		"msg_id": hex.EncodeToString(id[:]), "msg_type": "stream", "username": "tre-gate",
		"session": session, "date": k.now().UTC().Format(time.RFC3339Nano), "version": "5.3",
	}
	channel, _ := original["channel"].(string)
	if channel == "" {
		channel = "iopub"
	}
	out, _ := json.Marshal(map[string]any{
		"header": header, "msg_id": header["msg_id"], "msg_type": "stream",
		"parent_header": parent, "metadata": map[string]any{}, "channel": channel,
		"content": map[string]any{"name": "stderr", "text": k.message + "\n"},
		"buffers": []any{},
	})
	return out
}

// --- terminals: terminado's JSON arrays ["stdout", text] -----------------------------------

type terminalCutter struct {
	message  string
	notified bool
}

func (t *terminalCutter) judge(payload []byte) [][]byte {
	var msg []any
	if json.Unmarshal(payload, &msg) != nil || len(msg) == 0 {
		return nil
	}
	if kind, _ := msg[0].(string); kind != "stdout" {
		return [][]byte{payload} // setup, disconnect: no output
	}
	if t.notified {
		return nil
	}
	t.notified = true
	out, _ := json.Marshal([]any{"stdout", "\r\n" + t.message + "\r\n"})
	return [][]byte{out}
}

// dropCutter sends nothing after the cut (event streams).
type dropCutter struct{}

func (dropCutter) judge([]byte) [][]byte { return nil }
