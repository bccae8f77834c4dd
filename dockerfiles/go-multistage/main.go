// hello-server: a minimal HTTP service that checks itself once it listens.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strings"
)

func main() {
	listen := flag.String("listen", ":8080", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("hello-server: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", runtime.Version())
	})
	go func() {
		port := ln.Addr().(*net.TCPAddr).Port
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			log.Printf("hello-server: self-check failed: %v", err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("KILN-COMPAT-OK go-multistage: GET / %d %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
	}()
	log.Fatal(http.Serve(ln, mux))
}
