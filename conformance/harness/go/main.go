// Runs x509-limbo through Go's crypto/x509 (the standard library only), for mutual's conformance
// page: the suite's published per-harness results were not reachable from our machines, so we run the
// other verifiers ourselves on the same suite copy as ours.
// Usage: go run . limbo.json results.json
// Cases Go has no knob for (CRLs, key_usage, signature_algorithms, RFC822 names) are SKIPPED.
package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"runtime"
	"time"
)

type peerName struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

type testcase struct {
	ID                  string    `json:"id"`
	ValidationKind      string    `json:"validation_kind"`
	TrustedCerts        []string  `json:"trusted_certs"`
	Intermediates       []string  `json:"untrusted_intermediates"`
	Peer                string    `json:"peer_certificate"`
	ValidationTime      *string   `json:"validation_time"`
	SignatureAlgorithms []string  `json:"signature_algorithms"`
	KeyUsage            []string  `json:"key_usage"`
	ExtendedKeyUsage    []string  `json:"extended_key_usage"`
	ExpectedPeerName    *peerName `json:"expected_peer_name"`
	MaxChainDepth       *int      `json:"max_chain_depth"`
	Crls                []string  `json:"crls"`
}

type result struct {
	ID      string `json:"id"`
	Actual  string `json:"actual_result"`
	Context string `json:"context"`
}

func parse(p string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}

func run(c testcase) (string, string) {
	if len(c.Crls) > 0 {
		return "SKIPPED", "CRLs not supported by crypto/x509"
	}
	if len(c.KeyUsage) > 0 || len(c.SignatureAlgorithms) > 0 {
		return "SKIPPED", "key_usage/signature_algorithms not configurable"
	}
	if c.ExpectedPeerName != nil && c.ExpectedPeerName.Kind == "RFC822" {
		return "SKIPPED", "RFC822 peer name"
	}
	usage := x509.ExtKeyUsageServerAuth
	if c.ValidationKind == "CLIENT" {
		usage = x509.ExtKeyUsageClientAuth
	}
	for _, e := range c.ExtendedKeyUsage {
		if (e != "serverAuth" || usage != x509.ExtKeyUsageServerAuth) && (e != "clientAuth" || usage != x509.ExtKeyUsageClientAuth) {
			return "SKIPPED", "EKU other than the validation kind's"
		}
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{usage}}
	for _, p := range c.TrustedCerts {
		cert, err := parse(p)
		if err != nil {
			return "FAILURE", "parse trusted: " + err.Error()
		}
		opts.Roots.AddCert(cert)
	}
	for _, p := range c.Intermediates {
		cert, err := parse(p)
		if err != nil {
			return "FAILURE", "parse intermediate: " + err.Error()
		}
		opts.Intermediates.AddCert(cert)
	}
	leaf, err := parse(c.Peer)
	if err != nil {
		return "FAILURE", "parse leaf: " + err.Error()
	}
	if c.ValidationTime != nil {
		t, err := time.Parse(time.RFC3339, *c.ValidationTime)
		if err != nil {
			return "SKIPPED", "validation_time: " + err.Error()
		}
		opts.CurrentTime = t
	}
	if c.ValidationKind == "SERVER" {
		if c.ExpectedPeerName == nil {
			return "SKIPPED", "server case without a peer name"
		}
		opts.DNSName = c.ExpectedPeerName.Value
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return "FAILURE", err.Error()
	}
	if c.MaxChainDepth != nil {
		ok := false
		for _, ch := range chains {
			// the suite counts intermediates: a chain is leaf + intermediates + root
			if len(ch)-2 <= *c.MaxChainDepth {
				ok = true
			}
		}
		if !ok {
			return "FAILURE", "chain longer than max_chain_depth"
		}
	}
	return "SUCCESS", ""
}

func main() {
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var suite struct {
		Testcases []testcase `json:"testcases"`
	}
	if err := json.Unmarshal(raw, &suite); err != nil {
		panic(err)
	}
	out := struct {
		Version int      `json:"version"`
		Harness string   `json:"harness"`
		Results []result `json:"results"`
	}{1, "go-crypto-x509-" + runtime.Version(), nil}
	for _, c := range suite.Testcases {
		a, ctx := run(c)
		out.Results = append(out.Results, result{c.ID, a, ctx})
	}
	b, _ := json.Marshal(out)
	if err := os.WriteFile(os.Args[2], b, 0o644); err != nil {
		panic(err)
	}
}
