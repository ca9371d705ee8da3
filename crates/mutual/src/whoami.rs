//! Who runs the command, for `requested_by` in the inventory: `$USER` when set, else the name
//! of the process's uid from /etc/passwd (containers often have no `$USER`), else `uid:N`.
//! No libc call: the uid is the owner of /proc/self.

use std::os::unix::fs::MetadataExt;

/// The user's name, never empty.
pub fn user_name() -> String {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return u;
    }
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    name_for_uid(&passwd, uid).unwrap_or_else(|| format!("uid:{uid}"))
}

/// Who did it, as the inventory records a command-line action (`requested_by`, `decided_by`,
/// `created_by`): `cli:NAME`. Containers without `$USER` get the passwd name or `uid:N`, not
/// a bare `cli` that names nobody.
pub fn actor() -> String {
    format!("cli:{}", user_name())
}

/// The name of `uid` in an /etc/passwd text.
fn name_for_uid(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let id: u32 = f.next()?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let p = "root:x:0:0:root:/root:/bin/bash\n# comment\napp:x:1000:1000::/home/app:/bin/sh\n";
        assert_eq!(name_for_uid(p, 1000).as_deref(), Some("app"));
        assert_eq!(name_for_uid(p, 0).as_deref(), Some("root"));
        assert_eq!(name_for_uid(p, 42), None);
    }
}
