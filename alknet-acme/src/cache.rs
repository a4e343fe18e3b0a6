//! The on-disk cache: the account, the certificate and its key, kept
//! private (directory 0700, files 0600).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::AcmeError;

const ACCOUNT: &str = "account.json";
const CHAIN: &str = "certificate.pem";
const KEY: &str = "certificate.key";
/// Which names the cached certificate is for: a change means a new order.
const NAMES: &str = "names.txt";

/// One cache directory.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub(crate) fn open(dir: &Path) -> Result<Self, AcmeError> {
        let failed = |error: std::io::Error| AcmeError::Cache {
            path: dir.to_owned(),
            reason: error.to_string(),
        };
        fs::create_dir_all(dir).map_err(failed)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(failed)?;
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub(crate) fn account(&self) -> Result<Option<String>, AcmeError> {
        self.read(ACCOUNT)
    }

    pub(crate) fn save_account(&self, json: &str) -> Result<(), AcmeError> {
        self.write(ACCOUNT, json.as_bytes())
    }

    /// Drops the cached account (the server forgot it).
    pub(crate) fn forget_account(&self) {
        let _ = fs::remove_file(self.dir.join(ACCOUNT));
    }

    /// The cached chain and key, if they are for `names`.
    pub(crate) fn certificate(&self, names: &str) -> Result<Option<(String, String)>, AcmeError> {
        if self.read(NAMES)?.as_deref() != Some(names) {
            return Ok(None);
        }
        Ok(self.read(CHAIN)?.zip(self.read(KEY)?))
    }

    pub(crate) fn save_certificate(
        &self,
        names: &str,
        chain: &str,
        key: &str,
    ) -> Result<(), AcmeError> {
        self.write(KEY, key.as_bytes())?;
        self.write(CHAIN, chain.as_bytes())?;
        self.write(NAMES, names.as_bytes())
    }

    fn read(&self, name: &str) -> Result<Option<String>, AcmeError> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(AcmeError::Cache {
                path,
                reason: error.to_string(),
            }),
        }
    }

    /// Written to a private temporary file, then renamed over the old one.
    fn write(&self, name: &str, contents: &[u8]) -> Result<(), AcmeError> {
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.new"));
        let failed = |error: std::io::Error| AcmeError::Cache {
            path: path.clone(),
            reason: error.to_string(),
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary).map_err(failed)?;
        file.write_all(contents).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        fs::rename(&temporary, &path).map_err(failed)
    }
}
