//! PKCS#11 modules, each loaded and initialised once per process: `C_Initialize` may be called
//! only once per library per process, and every token and key of a module shares that one
//! context (FIELD-NOTES).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

use crate::HsmError;

static MODULES: Mutex<Vec<(PathBuf, Arc<Pkcs11>)>> = Mutex::new(Vec::new());

/// The initialised context of the module at `path`, loading it on first use.
pub(crate) fn load(path: &Path) -> Result<Arc<Pkcs11>, HsmError> {
    let meta = std::fs::metadata(path).map_err(|e| HsmError::ModuleMissing {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(HsmError::ModuleMissing {
            path: path.to_path_buf(),
            detail: "not a file".into(),
        });
    }
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    // A poisoned lock only means another thread panicked while loading; the list itself is
    // still consistent (entries are pushed whole), so go on with it.
    let mut mods = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, m)) = mods.iter().find(|(p, _)| *p == key) {
        return Ok(Arc::clone(m));
    }
    let ctx = Pkcs11::new(&key).map_err(|e| HsmError::NotAModule {
        path: path.to_path_buf(),
        detail: match e {
            Error::LibraryLoading(l) => {
                format!("it does not load as a PKCS#11 library (no C_GetFunctionList): {l}")
            }
            other => other.to_string(),
        },
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(HsmError::NotAModule {
                path: path.to_path_buf(),
                detail: format!("C_Initialize failed: {e}"),
            })
        }
    }
    let ctx = Arc::new(ctx);
    mods.push((key, Arc::clone(&ctx)));
    Ok(ctx)
}
