// Command tre-csi-registrar registers one CSI driver with the kubelet's plugin watcher.
//
// It does what kubernetes-csi/node-driver-registrar does for a node plugin, and no more: it
// serves the kubelet's pluginregistration.v1 Registration API on a socket in the kubelet's
// plugins_registry directory, answering GetInfo with the driver's name and its CSI socket.
// The kubelet then talks to the driver directly. We carry this small program because the Go
// module proxy refuses every node-driver-registrar version (403), so it cannot be built from
// its module (docs/architecture.md, "Datasets reach the pod").
//
// It fails closed: a registration the kubelet reports as failed ends the process with an
// error, so the supervisor sees it instead of a driver that silently never mounts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type registrar struct {
	registerapi.UnimplementedRegistrationServer
	driver   string
	endpoint string
	failed   chan error
}

func (r *registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.driver,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, status *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if status.PluginRegistered {
		log.Printf("the kubelet registered %s (CSI socket %s)", r.driver, r.endpoint)
	} else {
		r.failed <- fmt.Errorf("the kubelet refused to register %s: %s", r.driver, status.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func main() {
	driver := flag.String("driver", "", "CSI driver name, as in the PVs (e.g. ru.yandex.s3.csi)")
	endpoint := flag.String("csi-address", "", "absolute path of the driver's CSI socket, as the kubelet sees it")
	registry := flag.String("registration-dir", "/var/lib/kubelet/plugins_registry", "the kubelet's plugin registration directory")
	flag.Parse()
	if *driver == "" || !filepath.IsAbs(*endpoint) {
		log.Fatal("--driver and an absolute --csi-address are required")
	}
	if _, err := os.Stat(*endpoint); err != nil {
		// The kubelet would accept the registration and then fail every mount.
		log.Fatalf("the driver's socket %s: %v (start the node plugin first)", *endpoint, err)
	}
	socket := filepath.Join(*registry, *driver+"-reg.sock")
	// A socket left by an earlier run would make Listen fail.
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatalf("removing stale %s: %v", socket, err)
	}
	listener, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("listening on %s: %v", socket, err)
	}
	r := &registrar{driver: *driver, endpoint: *endpoint, failed: make(chan error, 1)}
	server := grpc.NewServer()
	registerapi.RegisterRegistrationServer(server, r)
	go func() {
		if err := server.Serve(listener); err != nil {
			r.failed <- err
		}
	}()
	log.Printf("registering %s through %s", *driver, socket)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-signals:
		log.Printf("%v: unregistering %s", sig, *driver)
		server.Stop()
		// The kubelet unregisters a plugin whose registration socket disappears.
		_ = os.Remove(socket)
	case err := <-r.failed:
		server.Stop()
		_ = os.Remove(socket)
		log.Fatal(err)
	}
}
