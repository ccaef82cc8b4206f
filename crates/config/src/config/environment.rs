//! What a herd file's meaning takes from the process environment. The caller reads it (once,
//! where it runs) and hands it to [`HerdConfig::parse`](super::HerdConfig::parse), so
//! parsing depends on its inputs alone and a test says what the environment holds.

use std::fmt;

use crate::auth::SECRET_ENV;

/// The environment variables that take precedence over settings in the herd file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `HERD_SECRET`, when set and not empty: the herd secret, over anything the file says.
    pub secret: Option<String>,
}

impl Environment {
    /// This process's environment, now.
    pub fn of_process() -> Environment {
        Environment {
            secret: std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty()),
        }
    }
}

/// Shows whether the secret is set, never the secret.
impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.secret.as_ref().map(|_| "<set>");
        f.debug_struct("Environment")
            .field("secret", &secret)
            .finish()
    }
}
