//! File access confined to the allowed roots.
//!
//! A requested path is refused (403) when it has a `..` component, when it is absolute
//! and outside every root, or when its canonical form (symlinks resolved) leaves the
//! roots. Relative paths are taken from the first root.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::error::{ApiError, WebError};

/// Most entries [`AllowList::list`] returns.
pub const MAX_LISTED: usize = 500;
/// Deepest directory level [`AllowList::list`] descends to below a root.
pub const MAX_LIST_DEPTH: usize = 4;

/// The canonical directories files may be read from.
#[derive(Debug, Clone)]
pub struct AllowList {
    roots: Vec<PathBuf>,
}

/// A file the pickers may offer.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub path: String,
    pub bytes: u64,
}

impl AllowList {
    /// Canonicalise `dirs` (the current directory when empty).
    pub fn new(dirs: &[PathBuf]) -> Result<Self, WebError> {
        let dirs = if dirs.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            dirs.to_vec()
        };
        let mut roots = Vec::new();
        for d in dirs {
            let c = std::fs::canonicalize(&d).map_err(|source| WebError::AllowDir {
                path: d.clone(),
                source,
            })?;
            if !c.is_dir() {
                return Err(WebError::AllowNotDir(d));
            }
            roots.push(c);
        }
        Ok(AllowList { roots })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    fn inside(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    /// The canonical path of `requested` if it exists inside a root.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, ApiError> {
        let requested = requested.trim();
        if requested.is_empty() {
            return Err(ApiError::bad("path: empty"));
        }
        if requested.contains('\0') {
            return Err(ApiError::bad("path: contains a NUL byte"));
        }
        let p = Path::new(requested);
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(ApiError::forbidden(format!(
                "path `{requested}`: `..` is not allowed"
            )));
        }
        let joined = if p.is_absolute() {
            if !self.inside(p) {
                return Err(self.outside(requested));
            }
            p.to_path_buf()
        } else {
            self.roots[0].join(p)
        };
        let canonical = std::fs::canonicalize(&joined).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ApiError::new(
                    axum::http::StatusCode::NOT_FOUND,
                    format!("path `{requested}`: no such file"),
                )
            } else {
                ApiError::bad(format!("path `{requested}`: {e}"))
            }
        })?;
        if !self.inside(&canonical) {
            return Err(self.outside(requested));
        }
        Ok(canonical)
    }

    fn outside(&self, requested: &str) -> ApiError {
        ApiError::forbidden(format!(
            "path `{requested}` is outside the allowed directories ({})",
            self.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// Regular files under the roots whose extension is one of `exts` (lower case),
    /// at most [`MAX_LISTED`], skipping hidden directories and `target`.
    pub fn list(&self, exts: &[String]) -> Vec<Listed> {
        let mut out = Vec::new();
        for root in &self.roots {
            walk(root, 0, exts, &mut out);
        }
        out
    }
}

fn walk(dir: &Path, depth: usize, exts: &[String], out: &mut Vec<Listed>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= MAX_LISTED {
            return;
        }
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if depth < MAX_LIST_DEPTH && !name.starts_with('.') && name != "target" {
                walk(&e.path(), depth + 1, exts, out);
            }
        } else if ft.is_file() {
            let ext = Path::new(name.as_ref())
                .extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if exts.contains(&ext) {
                out.push(Listed {
                    path: e.path().display().to_string(),
                    bytes: e.metadata().map(|m| m.len()).unwrap_or(0),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_parent_absolute_outside_and_symlink_escape() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.yaml"), "x").unwrap();
        std::fs::write(outer.path().join("secret.txt"), "s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outer.path().join("secret.txt"), root.join("link")).unwrap();
        let allow = AllowList::new(std::slice::from_ref(&root)).unwrap();
        assert!(allow.resolve("a.yaml").unwrap().ends_with("root/a.yaml"));
        let abs = root.join("a.yaml").display().to_string();
        assert!(allow.resolve(&abs).is_ok());
        for bad in ["../secret.txt", "sub/../../secret.txt", "/etc/passwd"] {
            assert_eq!(allow.resolve(bad).unwrap_err().status, 403, "{bad}");
        }
        #[cfg(unix)]
        assert_eq!(allow.resolve("link").unwrap_err().status, 403);
        assert_eq!(allow.resolve("missing.gguf").unwrap_err().status, 404);
        assert_eq!(allow.resolve("").unwrap_err().status, 400);
        let listed = allow.list(&["yaml".to_string()]);
        assert_eq!(listed.len(), 1);
    }
}
