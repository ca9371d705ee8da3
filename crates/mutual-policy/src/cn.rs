//! A certificate's commonName against its subjectAltName values (CA/B Forum BR 7.1.4.3: a CN
//! that names one of them repeats it character for character). One verdict for the lint's
//! `cn-san-not-verbatim` rule (mutual-tls) and for the CA, which refuses to sign what the lint
//! would call an error (mutual-pki).

use std::net::IpAddr;

/// How a commonName stands to the SAN values in their text forms (a dNSName, a URI, an
/// rfc822Name, an IP address as `IpAddr` prints it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CnVsSans<'a> {
    /// It is one of them, character for character.
    Verbatim,
    /// It names this one in another form (case, a non-canonical IP address).
    OtherForm(&'a str),
    /// An internationalized domain name (non-ASCII, with a dot): a dNSName is ASCII.
    Idn,
    /// It names none of them (a service name, say).
    NotASan,
}

/// The verdict for `cn` against `sans`.
pub fn against_sans<'a>(cn: &str, sans: &'a [String]) -> CnVsSans<'a> {
    if sans.iter().any(|n| n == cn) {
        CnVsSans::Verbatim
    } else if let Some(same) = sans.iter().find(|n| same_name(cn, n)) {
        CnVsSans::OtherForm(same)
    } else if !cn.is_ascii() && cn.contains('.') {
        CnVsSans::Idn
    } else {
        CnVsSans::NotASan
    }
}

/// Whether a commonName denotes the SAN value `san` without being its verbatim copy: a DNS
/// name differing in case, or an IP address written another way (hex, leading zeros,
/// uppercase, uncompressed IPv6).
pub fn same_name(cn: &str, san: &str) -> bool {
    if cn.eq_ignore_ascii_case(san) {
        return true;
    }
    let Ok(ip) = san.parse::<IpAddr>() else {
        return false;
    };
    match ip {
        IpAddr::V6(v6) => cn.parse::<std::net::Ipv6Addr>().is_ok_and(|c| c == v6),
        IpAddr::V4(v4) => lenient_ipv4(cn) == Some(u32::from(v4)),
    }
}

/// IPv4 as inet_aton reads it (hex `0x..`, leading zeros, one to four parts), for
/// recognizing an address written in a non-canonical form.
fn lenient_ipv4(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let nums = parts
        .iter()
        .map(
            |p| match p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
                Some(h) => u32::from_str_radix(h, 16).ok(),
                None => p.parse::<u32>().ok(),
            },
        )
        .collect::<Option<Vec<u32>>>()?;
    let (last, head) = nums.split_last()?;
    let mut v: u32 = 0;
    for (i, n) in head.iter().enumerate() {
        if *n > 255 {
            return None;
        }
        v |= n << (24 - 8 * i);
    }
    let room = 32 - 8 * head.len();
    if room < 32 && u64::from(*last) >= (1u64 << room) {
        return None;
    }
    Some(v | last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_another_form() {
        assert!(same_name("Example.COM", "example.com"));
        assert!(same_name("0xC0A80101", "192.168.1.1"));
        assert!(same_name("192.168.001.001", "192.168.1.1"));
        assert!(same_name("2001:DB8::1", "2001:db8::1"));
        assert!(!same_name("other.example.com", "example.com"));
        assert!(!same_name("10.0.0.1", "192.168.1.1"));
        let sans = ["web.example.com".to_string(), "10.0.0.1".to_string()];
        assert_eq!(against_sans("web.example.com", &sans), CnVsSans::Verbatim);
        assert_eq!(
            against_sans("Web.Example.com", &sans),
            CnVsSans::OtherForm("web.example.com")
        );
        assert_eq!(against_sans("bücher.example", &sans), CnVsSans::Idn);
        assert_eq!(against_sans("web", &sans), CnVsSans::NotASan);
    }
}
