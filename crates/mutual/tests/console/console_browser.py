"""The console in a real headless Chromium (crates/mutual/tests/console.rs runs this).

Reads a JSON config (argv[1]) prepared by the Rust test: the CA server's URL, the root, PKCS#12
files for an admin and a non-admin, serials to look at. For each person it makes a HOME whose
NSS db (~/.pki/nssdb) trusts the root and holds that person's certificate; the managed policy
AutoSelectCertificateForUrls (installed by the Rust test) makes Chromium present it without a
prompt. Prints one JSON line of results (the minted token, the revoked serial) for the Rust side,
which checks them against /v1/crl and `mutual enroll`. Any failed expectation raises.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webdriver  # noqa: E402


def nss_home(work, name, root_pem, p12, p12_pass):
    home = os.path.join(work, "home-" + name)
    db = os.path.join(home, ".pki", "nssdb")
    os.makedirs(db, exist_ok=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("certutil", "-N", "-d", "sql:" + db, "--empty-password")
    run("certutil", "-A", "-d", "sql:" + db, "-n", "mutual-test-root", "-t", "C,,", "-i", root_pem)
    if p12:
        run("pk12util", "-d", "sql:" + db, "-i", p12, "-W", p12_pass)
    return home


def expect(cond, what, d=None):
    if not cond:
        extra = ""
        if d is not None:
            try:
                extra = "\n--- page ---\n" + d.source()[:3000]
            except Exception:  # noqa: BLE001
                pass
        raise AssertionError(what + extra)


def row_names(d):
    return [d._s("GET", f"/element/{e}/text") for e in d.find_all("#certs tbody td:first-child a")]


def main():
    cfg = json.load(open(sys.argv[1]))
    work = cfg["work"]
    shots = cfg.get("shots")
    url = cfg["url"]
    out = {}

    def shot(d, name):
        if shots:
            d.screenshot(os.path.join(shots, name))

    admin_home = nss_home(work, "admin", cfg["root"], cfg["admin_p12"], cfg["p12_pass"])
    d = webdriver.Driver(admin_home, os.path.join(work, "chromedriver-admin.log"))
    try:
        # Load the console with the admin certificate.
        d.get(url + "/ui/")
        expect(d.title().startswith("Inventory"), "inventory page: " + d.title(), d)
        expect(d.text("#who") == cfg["admin_id"], "signed in as " + d.text("#who"), d)
        expect("web" in row_names(d), "web listed", d)
        shot(d, "console-inventory.png")

        # Search by DNS name: the SAN index answers.
        d.type("#q", "web.internal")
        d.click_and_wait("#go")
        expect(row_names(d) == ["web"], f"search web.internal: {row_names(d)}", d)
        expect("DNS name" in d.text("#matched"), "matched as a DNS name", d)
        # Search by SPIFFE ID.
        d.type("#q", cfg["admin_id"])
        d.click_and_wait("#go")
        expect(row_names(d) == ["admin"], f"search by SPIFFE ID: {row_names(d)}", d)

        # Filter: expiring within 2h finds only the 1-hour certificate.
        d.get(url + "/ui/")
        d.type("#expiring", "2h")
        d.click_and_wait("#go")
        expect(row_names(d) == ["soon"], f"expiring within 2h: {row_names(d)}", d)
        shot(d, "console-filter.png")

        # Open a certificate from the list.
        d.get(url + "/ui/?q=web.internal")
        d.click_and_wait("#certs tbody a")
        expect(d.text("#cert-name") == "web", "certificate page", d)
        expect(len(d.find_all("#chain tr")) == 4, "leaf, intermediate and root rows", d)
        expect(d.text("#issuer") == "int-1", "issuer int-1: " + d.text("#issuer"), d)
        expect(d.text("#requested-by").startswith("cli:"), "who asked", d)
        shot(d, "console-certificate.png")
        # Its extensions, read from the certificate the inventory kept.
        exts = d.text("#extensions")
        expect("dns:web.internal" in exts and "serverAuth" in exts, "extensions: " + exts, d)
        expect(d.text("#key-type").startswith("ecdsa-p256"), "key type: " + d.text("#key-type"), d)
        d.execute("document.querySelector('#downloads').scrollIntoView();")
        shot(d, "console-extensions.png")
        web_page = d.url()

        # A POST without the CSRF token is refused, and nothing changes.
        d.submit_with(lambda: d.execute(
            "document.querySelector('#revoke input[name=csrf]').remove();"
            "document.querySelector('#revoke').submit();"))
        expect(d.text("#reason") == "csrf_failed", "CSRF refusal: " + d.text("#reason"), d)
        expect("CSRF token is missing" in d.text("#detail"), "refused for the token", d)
        d.get(web_page)
        expect(d.text("#status") == "valid", "still valid after the refused POST", d)

        # Revoke with a reason.
        d.select("#reason-select", "key-compromise")
        d.click_and_wait("#revoke-button")
        expect('id="message"' in d.source(), "revoked message", d)
        expect("Revoked" in d.text("#message"), "revoked message", d)
        expect(d.text("#status") == "revoked", "status revoked", d)
        out["revoked_serial"] = cfg["web_serial"]

        # The revoked filter shows it.
        d.get(url + "/ui/?status=revoked")
        expect(row_names(d) == ["web"], f"revoked filter: {row_names(d)}", d)

        # A certificate whose subject holds markup: shown as text, never run.
        d.get(url + "/ui/cert/" + cfg["xss_serial"])
        src = d.source()
        expect("&lt;script&gt;alert(1)&lt;/script&gt;" in src, "escaped subject", d)
        expect("<script>alert(1)" not in src, "no raw script tag", d)
        expect(d.execute("return document.scripts.length;") == 0, "no script element", d)

        # Create an enrollment token (shown once).
        d.get(url + "/ui/tokens/new")
        shot(d, "console-token-form.png")
        d.type("#sans", "dns:new.internal")
        d.select("#usage", "server")
        d.click_and_wait("#create-token")
        token = d.execute("return document.querySelector('#token').value;")
        expect(token.count(".") == 2, "a JWT: " + token[:20], d)
        out["token"] = token
        line = d.text("#enroll-line")
        expect(line.startswith("mutual enroll --ca-url " + url + " --root-sha256 "), "enroll line: " + line, d)
        if shots:
            d.execute("document.querySelector('#token').value = 'eyJhbGciOiJFUzI1NiIs... (shown once)';")
            shot(d, "console-token.png")

        # CRL status: a CRL was signed for the revocation.
        d.get(url + "/ui/crl")
        out["crl_number"] = int(d.text("#crl-number"))
        expect(d.text("#revoked-count") == "1", "one revoked", d)
        shot(d, "console-crl.png")

        # Pending EST enrollments: approve one, reject the other.
        d.get(url + "/ui/enrollments")
        for i in (cfg["approve_id"], cfg["reject_id"]):
            expect(len(d.find_all("#enr-" + i)) == 1, "pending " + i, d)
        shot(d, "console-enrollments.png")
        d.click_and_wait("#enr-" + cfg["approve_id"] + " button.approve")
        expect(d.text("#message").startswith("Approved " + cfg["approve_id"]), "approved", d)
        expect(len(d.find_all("#enr-" + cfg["approve_id"])) == 0, "no longer pending", d)
        d.click_and_wait("#enr-" + cfg["reject_id"] + " button.reject")
        expect(d.text("#message").startswith("Rejected " + cfg["reject_id"]), "rejected", d)
        expect(len(d.find_all("#none-pending")) == 1, "nothing pending", d)
    finally:
        d.quit()

    # A certificate that is not an admin's, and no certificate, are refused.
    for name, p12, reason in [("user", cfg["user_p12"], "forbidden"), ("anon", None, "no_client_cert")]:
        home = nss_home(work, name, cfg["root"], p12, cfg["p12_pass"])
        d = webdriver.Driver(home, os.path.join(work, f"chromedriver-{name}.log"))
        try:
            d.get(url + "/ui/")
            expect(d.text("#reason") == reason, f"{name}: {d.text('#reason')}", d)
            if shots and name == "user":
                shot(d, "console-refused.png")
        finally:
            d.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
