//! Local accounts and sessions on Linux: `/etc/passwd`, `/etc/group`,
//! `/etc/shadow` (root only), `/etc/login.defs`, and the binary `utmp` /
//! `wtmp` records.

use std::collections::HashSet;

use deskpulse_proto::v1::{LocalUser, UserSession};

/// Groups whose members may administer the machine.
pub const ADMIN_GROUPS: &[&str] = &["sudo", "wheel", "admin"];

/// UID_MIN and UID_MAX from login.defs, defaulting to 1000 and 60000.
pub fn uid_range(login_defs: &str) -> (u32, u32) {
    let value = |key: &str| {
        login_defs.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(key))
                .then(|| f.next()?.parse().ok())
                .flatten()
        })
    };
    (
        value("UID_MIN").unwrap_or(1000),
        value("UID_MAX").unwrap_or(60000),
    )
}

/// Human accounts (uid in range) and root, with admin rights from the
/// groups.
pub fn accounts(passwd: &str, group: &str, range: (u32, u32)) -> Vec<LocalUser> {
    let mut admin_names = HashSet::new();
    let mut admin_gids = HashSet::new();
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && ADMIN_GROUPS.contains(&f[0]) {
            admin_gids.insert(f[2].to_owned());
            admin_names.extend(f[3].split(',').filter(|m| !m.is_empty()).map(str::to_owned));
        }
    }
    passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].starts_with(['#', '+', '-']) {
                return None;
            }
            let uid: u32 = f[2].parse().ok()?;
            if uid != 0 && !(range.0..=range.1).contains(&uid) {
                return None;
            }
            Some(LocalUser {
                name: f[0].to_owned(),
                full_name: f[4].split(',').next().unwrap_or("").to_owned(),
                id: uid.to_string(),
                admin: uid == 0 || admin_names.contains(f[0]) || admin_gids.contains(f[3]),
                disabled: false,
            })
        })
        .collect()
}

/// Names of accounts that are locked (`!` or `*` password) or expired,
/// from a shadow file. `today` is days since the epoch.
pub fn disabled(shadow: &str, today: i64) -> HashSet<String> {
    shadow
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 2 {
                return None;
            }
            let locked = f[1].starts_with('!') || f[1] == "*";
            let expired = f
                .get(7)
                .and_then(|e| e.parse::<i64>().ok())
                .is_some_and(|e| e <= today);
            (locked || expired).then(|| f[0].to_owned())
        })
        .collect()
}

/// Size of one `struct utmp` record on Linux (x86_64, aarch64).
pub const UTMP_RECORD: usize = 384;
const USER_PROCESS: i16 = 7;

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The logged-in sessions of utmp records (type USER_PROCESS).
pub fn utmp_sessions(data: &[u8]) -> Vec<UserSession> {
    data.chunks_exact(UTMP_RECORD)
        .filter(|r| i16::from_le_bytes([r[0], r[1]]) == USER_PROCESS)
        .map(|r| UserSession {
            terminal: c_string(&r[8..40]),
            user: c_string(&r[44..76]),
            host: c_string(&r[76..332]),
            started_unix_s: i64::from(i32::from_le_bytes([r[340], r[341], r[342], r[343]])),
        })
        .filter(|s| !s.user.is_empty())
        .collect()
}

/// The last login in wtmp records: the last USER_PROCESS record.
pub fn last_login(data: &[u8]) -> Option<(String, i64)> {
    utmp_sessions(data)
        .into_iter()
        .next_back()
        .map(|s| (s.user, s.started_unix_s))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One utmp record in the glibc layout.
    pub(crate) fn record(kind: i16, user: &str, line: &str, host: &str, at: i32) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_RECORD];
        r[0..2].copy_from_slice(&kind.to_le_bytes());
        r[8..8 + line.len()].copy_from_slice(line.as_bytes());
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r[76..76 + host.len()].copy_from_slice(host.as_bytes());
        r[340..344].copy_from_slice(&at.to_le_bytes());
        r
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
alice:x:1000:1000:Alice Martin,Room 4,,:/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/bash\n\
carol:x:1002:10:Carol:/home/carol:/bin/zsh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n#comment\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:\nsudo:x:27:alice\nusers:x:100:bob\n";

    #[test]
    fn humans_and_root_with_admin_rights_from_groups() {
        let users = accounts(PASSWD, GROUP, uid_range("UID_MIN 1000\nUID_MAX 60000\n"));
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            ["root", "alice", "bob", "carol"],
            "system accounts and nobody left out"
        );
        assert!(users[0].admin, "root");
        assert!(users[1].admin, "alice via sudo membership");
        assert!(!users[2].admin, "bob");
        assert!(users[3].admin, "carol via wheel as primary group");
        assert_eq!(users[1].full_name, "Alice Martin");
    }

    #[test]
    fn login_defs_ranges() {
        assert_eq!(uid_range(""), (1000, 60000));
        assert_eq!(
            uid_range("# c\nUID_MIN\t\t 500\nUID_MAX 2000\n"),
            (500, 2000)
        );
    }

    #[test]
    fn locked_and_expired_accounts() {
        let shadow = "root:*:19000:0:99999:7:::\nalice:$6$abc:19000:0:99999:7:::\nbob:!$6$x:19000::::::\ncarol:$6$y:19000:0:99999:7::19500:\n";
        let off = disabled(shadow, 19600);
        assert!(off.contains("bob") && off.contains("carol") && off.contains("root"));
        assert!(!off.contains("alice"));
    }

    #[test]
    fn utmp_sessions_and_the_last_login() {
        let mut data = record(2, "reboot", "~", "6.1.0", 100);
        data.extend(record(7, "alice", "tty2", "", 1_700_000_000));
        data.extend(record(7, "bob", "pts/0", "10.0.0.5", 1_700_000_100));
        data.extend(record(8, "", "pts/1", "", 1_700_000_200));
        data.extend(&[1, 2, 3]); // a torn record at the end
        let sessions = utmp_sessions(&data);
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[1].host, "10.0.0.5");
        assert_eq!(sessions[0].terminal, "tty2");
        assert_eq!(last_login(&data), Some(("bob".into(), 1_700_000_100)));
    }
}
