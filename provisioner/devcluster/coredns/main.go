// The local node's DNS resolver: CoreDNS v1.15.0 with only the plugins the platform needs.
//
// Notebooks use it as their only nameserver. It answers the names the platform serves (hosts)
// and refuses everything else (template); no forward plugin is even compiled in, so no
// configuration mistake can make it recurse to the internet. `kubernetes` is here for the
// in-cluster resolver the Helm chart runs (service names of the hub and the airlock).
//
// Built by provisioner/devcluster/build-binaries.sh into the version-keyed cache.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/template"
)

func init() {
	// The order plugins handle a query in (CoreDNS's own plugin.cfg order, reduced).
	dnsserver.Directives = []string{"bind", "errors", "log", "health", "hosts", "kubernetes", "template"}
}

func main() { coremain.Run() }
