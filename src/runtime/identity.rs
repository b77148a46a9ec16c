//! The caller's `/etc/passwd` and `/etc/group` entries inside the container.
//!
//! Apptainer's rules: start from the image's own file, rewrite the line that has the caller's
//! uid (or append one), so that `id`, `whoami` and `~` work for the caller. Pure text in, text
//! out; the runtime writes the result to its tmpfs and binds it over the image's file.

/// Who runs the container, as it should appear inside.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// Name of the primary group, when the host knows it.
    pub group_name: Option<String>,
}

/// The image's passwd text with the caller's line rewritten or appended.
pub fn passwd(image_passwd: &str, who: &Identity) -> String {
    let mut out = String::with_capacity(image_passwd.len() + 128);
    let mut found = false;
    for line in image_passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if !found && fields.len() >= 7 && fields[2].parse::<u32>().ok() == Some(who.uid) {
            found = true;
            if who.uid == 0 {
                // fakeroot: keep the image's root entry, only move its home.
                out.push_str(&format!(
                    "{}:{}:0:{}:{}:{}:{}\n",
                    fields[0], fields[1], fields[3], fields[4], who.home, fields[6]
                ));
            } else {
                out.push_str(&format!(
                    "{}:x:{}:{}:{}:{}:{}\n",
                    who.name, who.uid, fields[3], who.gecos, who.home, fields[6]
                ));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found {
        out.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            who.name, who.uid, who.gid, who.gecos, who.home, who.shell
        ));
    }
    out
}

/// The image's group text plus a line for the caller's primary group when the image lacks it.
pub fn group(image_group: &str, who: &Identity) -> String {
    let mut out = String::with_capacity(image_group.len() + 64);
    let mut found = false;
    for line in image_group.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 3 && fields[2].parse::<u32>().ok() == Some(who.gid) {
            found = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found {
        if let Some(name) = &who.group_name {
            out.push_str(&format!("{}:x:{}:{}\n", name, who.gid, who.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            gecos: "Alice".into(),
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
            group_name: Some("alice".into()),
        }
    }

    #[test]
    fn appends_the_caller_when_absent() {
        let text = passwd("root:x:0:0:root:/root:/bin/sh\n", &alice());
        assert_eq!(
            text,
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
        );
    }

    #[test]
    fn rewrites_a_line_with_the_callers_uid_keeping_its_shell() {
        let text = passwd("ubuntu:x:1000:1000::/home/ubuntu:/bin/sh", &alice());
        assert_eq!(text, "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n");
    }

    #[test]
    fn fakeroot_keeps_root_and_moves_home() {
        let mut root = alice();
        root.uid = 0;
        root.home = "/root".into();
        let text = passwd("root:x:0:0:root:/root:/bin/sh\n", &root);
        assert_eq!(text, "root:x:0:0:root:/root:/bin/sh\n");
    }

    #[test]
    fn group_added_once() {
        assert_eq!(
            group("root:x:0:\n", &alice()),
            "root:x:0:\nalice:x:1000:alice\n"
        );
        assert_eq!(group("staff:x:1000:\n", &alice()), "staff:x:1000:\n");
    }
}
