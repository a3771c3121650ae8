//! The output folder: which existing folder `--force` may replace, and the atomic swap that puts
//! a finished conversion in its place (or leaves everything as it was).
//!
//! anec never deletes or changes a file it did not write. So `--force` replaces a folder only
//! when every entry in it is a name anec writes and its `meta.json` is anec's, and never a folder
//! that holds the source model, lies inside it, or is the current directory.

use std::path::{Path, PathBuf};

use crate::convert::CHAT_TEMPLATE_FILES;
use crate::source::{ModelFiles, TOKENIZER_FILES};

/// Why an existing output folder is not replaced, or why the swap failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("the output {path} already exists (use --force to replace it)")]
    Exists { path: PathBuf },
    #[error("--force will not replace {path}: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, OutputError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> OutputError {
    let context = context.into();
    move |source| OutputError::Io { context, source }
}

/// Checks that `out` may be written: it does not exist, or `force` is set and it is a folder
/// anec wrote that holds nothing of the source model `files`. Runs before any work.
pub fn check_target(out: &Path, force: bool, files: &ModelFiles) -> Result<()> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("cannot read {}", out.display()))(e)),
    };
    if !force {
        return Err(OutputError::Exists { path: out.into() });
    }
    let refuse = |reason: String| {
        Err(OutputError::Refused {
            path: out.into(),
            reason,
        })
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link".into());
    }
    if !meta.is_dir() {
        return refuse("it is not a folder".into());
    }
    let canon = |p: &Path| {
        std::fs::canonicalize(p).map_err(io_err(format!("cannot resolve {}", p.display())))
    };
    let out_c = canon(out)?;
    let model_dir = canon(&files.dir)?;
    if out_c.starts_with(&model_dir) {
        return refuse(format!(
            "it is the source model's folder {} or inside it",
            files.dir.display()
        ));
    }
    // Every file the model is read from, through symlinks (the hub cache links snapshots to blobs).
    let sources = std::iter::once(&files.config)
        .chain(&files.weights)
        .chain(&files.index)
        .chain(&files.tokenizer_files);
    for f in std::iter::once(&files.dir).chain(sources) {
        if canon(f)?.starts_with(&out_c) {
            return refuse(format!("it contains the source model file {}", f.display()));
        }
    }
    if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) {
        if cwd == out_c {
            return refuse("it is the current directory".into());
        }
        if cwd.starts_with(&out_c) {
            return refuse(format!(
                "it contains the current directory {}",
                cwd.display()
            ));
        }
    }
    let strangers = entries_anec_does_not_write(out)?;
    if !strangers.is_empty() {
        let shown: Vec<&str> = strangers.iter().take(5).map(String::as_str).collect();
        let more = strangers.len().saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return refuse(format!(
            "it holds files anec does not write: {}{more}",
            shown.join(", ")
        ));
    }
    if !written_by_anec(&out.join("meta.json")) {
        return refuse("it has no meta.json written by anec, so it is not an anec output".into());
    }
    Ok(())
}

/// The names in `dir` that no anec conversion writes.
fn entries_anec_does_not_write(dir: &Path) -> Result<Vec<String>> {
    let mut strangers = Vec::new();
    let list = std::fs::read_dir(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
    for entry in list {
        let entry = entry.map_err(io_err(format!("cannot list {}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let ours = if is_dir {
            name.ends_with(".mlpackage") || name.ends_with(".mlmodelc")
        } else {
            name == "meta.yaml"
                || name == "meta.json"
                || TOKENIZER_FILES.contains(&name.as_str())
                || CHAT_TEMPLATE_FILES.contains(&name.as_str())
                || name == "generation_config.json"
        };
        if !ours {
            strangers.push(name);
        }
    }
    strangers.sort();
    Ok(strangers)
}

/// Whether `path` is a meta.json as anec writes it (anec's keys, a model name `anec-…`).
fn written_by_anec(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    serde_json::from_str::<crate::meta::Meta>(&text)
        .is_ok_and(|m| m.model_info.name.starts_with("anec-"))
}

/// Moves the finished temp folder `built` onto `out`. An existing `out` (already checked by
/// [`check_target`]) is moved aside into a temp folder in `parent` first, and moved back if the
/// final rename fails; on any error the built folder is removed with `built`'s guard.
pub fn swap_in(built: tempfile::TempDir, out: &Path, parent: &Path) -> Result<()> {
    let rename_built = |built: &tempfile::TempDir| {
        std::fs::rename(built.path(), out).map_err(io_err(format!(
            "cannot rename {} to {}",
            built.path().display(),
            out.display()
        )))
    };
    if std::fs::symlink_metadata(out).is_err() {
        rename_built(&built)?;
        // The guard's path is now `out`: keep it from deleting anything.
        let _ = built.keep();
        return Ok(());
    }
    let aside = tempfile::Builder::new()
        .prefix(".anec-old-")
        .tempdir_in(parent)
        .map_err(io_err(format!(
            "cannot create a temp folder in {}",
            parent.display()
        )))?;
    let old = aside.path().join("old");
    std::fs::rename(out, &old).map_err(io_err(format!("cannot move {} aside", out.display())))?;
    if let Err(e) = rename_built(&built) {
        return match std::fs::rename(&old, out) {
            Ok(()) => Err(e),
            Err(back) => {
                // Keep the previous output where it is and say where.
                let kept = aside.keep();
                Err(OutputError::Io {
                    context: format!(
                        "{e}; the previous output could not be moved back and is kept at {}",
                        kept.join("old").display()
                    ),
                    source: back,
                })
            }
        };
    }
    let _ = built.keep();
    // Dropping `aside` removes the previous output.
    drop(aside);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `root/out` holding meta.json "old", and a built temp folder beside it.
    fn old_and_built(root: &Path) -> (PathBuf, tempfile::TempDir) {
        let out = root.join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("meta.json"), "old").unwrap();
        let built = tempfile::Builder::new()
            .prefix(".anec-convert-")
            .tempdir_in(root)
            .unwrap();
        (out, built)
    }

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn swap_in_replaces_the_old_output_and_leaves_no_temp() {
        let root = tempfile::tempdir().unwrap();
        let (out, built) = old_and_built(root.path());
        std::fs::write(built.path().join("meta.json"), "new").unwrap();
        swap_in(built, &out, root.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("meta.json")).unwrap(),
            "new"
        );
        assert_eq!(names(root.path()), ["out"]);
    }

    #[test]
    fn a_failed_swap_moves_the_old_output_back() {
        let root = tempfile::tempdir().unwrap();
        let (out, built) = old_and_built(root.path());
        // The built folder vanished: the final rename fails after the old output was moved aside.
        std::fs::remove_dir(built.path()).unwrap();
        let err = swap_in(built, &out, root.path()).unwrap_err();
        assert!(err.to_string().contains("cannot rename"), "{err}");
        assert_eq!(
            std::fs::read_to_string(out.join("meta.json")).unwrap(),
            "old"
        );
        assert_eq!(names(root.path()), ["out"], "no temp folder is left");
    }
}
