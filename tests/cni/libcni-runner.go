// A CNI runtime in a few lines, on Debian's libcni (containernetworking/cni
// 1.1.2): validate the conflist (VERSION of each plugin), then ADD, CHECK
// or DEL one attachment, as containerd and podman do through libcni.
//
//	libcni-runner add|check|del CONFLIST NETNS CONTAINER_ID IFNAME CNI_PATH CACHE_DIR [PORT_MAPPINGS_JSON]
//
// ADD prints the result (converted to the list's version) on stdout.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func main() {
	if len(os.Args) < 8 {
		fmt.Fprintln(os.Stderr, "usage: libcni-runner add|check|del CONFLIST NETNS CONTAINER_ID IFNAME CNI_PATH CACHE_DIR [PORT_MAPPINGS_JSON]")
		os.Exit(2)
	}
	verb, conflist, netns, id, ifname, path, cache := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6], os.Args[7]
	list, err := libcni.ConfListFromFile(conflist)
	if err != nil {
		fail("reading the conflist", err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(path, ":"), cache, nil)
	ctx := context.Background()
	if _, err := cni.ValidateNetworkList(ctx, list); err != nil {
		fail("validating the conflist", err)
	}
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifname}
	if len(os.Args) > 8 {
		var pm []map[string]interface{}
		if err := json.Unmarshal([]byte(os.Args[8]), &pm); err != nil {
			fail("port mappings", err)
		}
		rt.CapabilityArgs = map[string]interface{}{"portMappings": pm}
	}
	switch verb {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail("ADD", err)
		}
		if err := res.Print(); err != nil {
			fail("printing the result", err)
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail("CHECK", err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail("DEL", err)
		}
	default:
		fail("verb", fmt.Errorf("unknown verb %q", verb))
	}
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}
