// Command etcd is etcd's own server main, built from Go modules for the
// jobreaper local stack (the etcd in Debian is too old for current API servers).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
