//! Shell-style wildcards in copy sources (`%files`, `COPY`/`ADD`) and `.dockerignore`: `*`,
//! `?` and `[…]` (`[!…]`/`[^…]` negated, `a-z` ranges) within one path component, expanded
//! against the file system where the copy reads (the host context, or an earlier stage's
//! root), as Apptainer and Docker do. Matches come sorted, so builds are reproducible.

use std::path::{Path, PathBuf};

/// Whether `path` has a wildcard character.
pub fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Paths under `base` matching `rel`, whose components may hold `*`, `?` and `[…]`.
pub fn glob(base: &Path, rel: &Path) -> Vec<PathBuf> {
    let mut found = vec![base.to_path_buf()];
    for comp in rel.components() {
        let pat = comp.as_os_str().to_string_lossy().into_owned();
        let mut next = Vec::new();
        for dir in &found {
            if !has_wildcard(&pat) {
                let p = dir.join(&pat);
                if p.symlink_metadata().is_ok() {
                    next.push(p);
                }
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(dir) {
                let mut names: Vec<_> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for n in names {
                    if wildcard(&pat, &n) {
                        next.push(dir.join(n));
                    }
                }
            }
        }
        found = next;
    }
    found
}

/// Shell-style matching of one name.
pub fn wildcard(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|c| *c == ']') else {
                    return !n.is_empty() && n[0] == '[' && go(&p[1..], &n[1..]);
                };
                let set = &p[1..end];
                let (neg, set) = if set.first() == Some(&'!') || set.first() == Some(&'^') {
                    (true, &set[1..])
                } else {
                    (false, set)
                };
                let Some(c) = n.first() else { return false };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= *c && *c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &n[1..])
            }
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_component() {
        assert!(wildcard("*.txt", "a.txt") && !wildcard("*.txt", "a.tx"));
        assert!(wildcard("f[0-9]?", "f1x") && !wildcard("f[!0-9]", "f1"));
        assert!(wildcard("[^a]b", "cb") && !wildcard("?", ""));
    }

    #[test]
    fn glob_expands_each_component_sorted() {
        let dir = std::env::temp_dir().join(format!("rsing-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in ["a1/x.txt", "a2/x.txt", "a2/y.log", "b1/x.txt"] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let rel = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            rel(glob(&dir, Path::new("a?/*.txt"))),
            ["a1/x.txt", "a2/x.txt"]
        );
        assert_eq!(rel(glob(&dir, Path::new("[ab]1"))), ["a1", "b1"]);
        assert!(glob(&dir, Path::new("c*")).is_empty());
        assert_eq!(rel(glob(&dir, Path::new("a2/y.log"))), ["a2/y.log"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
