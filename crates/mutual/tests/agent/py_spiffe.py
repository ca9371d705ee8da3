"""py-spiffe (PyPI `spiffe`), the SPIFFE project's own Python library, against `mutual agent`:
WorkloadApiClient.fetch_x509_svid and X509Source, with the socket from SPIFFE_ENDPOINT_SOCKET.
Prints one JSON object. Used by crates/mutual/tests/agent.rs."""
import json

from spiffe import WorkloadApiClient, X509Source

client = WorkloadApiClient()
svid = client.fetch_x509_svid(timeout=60)
bundles = client.fetch_x509_bundles(timeout=60)
source = X509Source(timeout_in_seconds=60)
try:
    from_source = source.svid
    print(json.dumps({
        "client_spiffe_id": str(svid.spiffe_id),
        "client_serial": format(svid.leaf.serial_number, "x"),
        "source_spiffe_id": str(from_source.spiffe_id),
        "trust_domains": sorted(str(b.trust_domain) for b in bundles.bundles),
    }), flush=True)
finally:
    source.close()
    client.close()
