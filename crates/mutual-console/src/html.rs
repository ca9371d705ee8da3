//! HTML rendering: escaping and the page frame. No template engine and no JavaScript: pages are
//! small `String`s built on the server, and every value that came from a certificate, the
//! inventory or a request goes through [`esc`] (text and attributes) or [`url_part`] (links)
//! before it is written, because a CN or a SAN can hold `<script>`.

use std::fmt::Write;

/// Escapes text for an HTML text node or a double- or single-quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a value for a URL path segment or query value.
pub fn url_part(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center}\
header a{color:#cfd8ea;text-decoration:none}header b{margin-right:12px}\
header .who{margin-left:auto;font-size:12px;color:#9aa6bd}\
main{padding:16px;max-width:1200px}\
table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6eb;vertical-align:top}\
th{background:#eef0f4;font-weight:600}\
code,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}\
form.inline{display:inline}fieldset{border:1px solid #d5d9e0;background:#fff;margin:0 0 12px}\
input,select,textarea,button{font:inherit;margin:2px 4px 2px 0}\
.revoked{color:#a11}.expired{color:#8a6d00}.valid{color:#16703a}\
.msg{padding:8px 12px;background:#e8f3ec;border:1px solid #9ccfae;margin-bottom:12px}\
.err{padding:8px 12px;background:#fbeaea;border:1px solid #e0a2a2;margin-bottom:12px}\
.secret{padding:8px;background:#fff8e1;border:1px solid #e6c35c}\
.pager a{margin-right:12px}";

/// One page: the navigation, `who` (the signed-in identity) and `body` (already escaped HTML).
pub fn page(title: &str, who: &str, body: &str) -> String {
    let mut o = String::with_capacity(body.len() + 2048);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · mutual CA</title><style>{STYLE}</style></head><body>\
         <header><b>mutual CA</b><a href=\"/ui/\">Inventory</a>\
         <a href=\"/ui/tokens/new\">New token</a><a href=\"/ui/crl\">CRL</a>\
         <a href=\"/ui/enrollments\">Pending enrollments</a>\
         <span class=\"who\" id=\"who\">{}</span></header><main>{body}</main></body></html>",
        esc(title),
        esc(who),
    );
    o
}

/// A hidden CSRF field for a state-changing form.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(url_part("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn page_escapes_title_and_who() {
        let p = page("<t>", "<w>", "<p>body</p>");
        assert!(p.contains("&lt;t&gt;") && p.contains("&lt;w&gt;"));
        assert!(!p.contains("<t>") && !p.contains("<w>"));
        assert!(p.contains("<p>body</p>"));
    }
}
