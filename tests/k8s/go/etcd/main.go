// Command etcd is upstream etcd's server entry point, built at the exact
// version Kubernetes v1.35 pins, so the control plane needs no other source.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
