//! Why a command failed, and the exit code that says whose fault it was.

use idem_runtime::StoreError;
use serde_json::json;

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command line: a bad URL, a missing SQLite file, an invalid key (exit 2).
    Usage,
    /// The store failed or could not be reached (exit 1).
    Store,
    /// The record asked for does not exist (exit 1).
    NotFound,
}

/// A failed command: its kind and a message a person can act on.
#[derive(Debug)]
pub struct Failure {
    kind: Kind,
    message: String,
}

impl Failure {
    /// A mistake on the command line.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            kind: Kind::Usage,
            message: message.into(),
        }
    }

    /// The store failed or could not be reached.
    pub fn store(message: impl Into<String>) -> Self {
        Failure {
            kind: Kind::Store,
            message: message.into(),
        }
    }

    /// No such record.
    pub fn not_found(message: impl Into<String>) -> Self {
        Failure {
            kind: Kind::NotFound,
            message: message.into(),
        }
    }

    /// A store error met while `doing` something, with a hint when the table is missing.
    pub fn from_store(doing: &str, error: &StoreError) -> Self {
        let text = error.to_string();
        let hint = if text.contains("no such table") || text.contains("does not exist") {
            " (is this the service's database, and has it run its migrations? \
             --table names another table)"
        } else {
            ""
        };
        Failure::store(format!("{doing}: {text}{hint}"))
    }

    /// The kind.
    #[cfg(test)]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message.
    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 2 for usage, 1 for the store and for a missing record.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Usage => 2,
            Kind::Store | Kind::NotFound => 1,
        }
    }

    /// The message on stderr and, with `json`, one object on stdout.
    pub fn print(&self, command: &str, json: bool) {
        eprintln!("idem {command}: {}", self.message);
        if json {
            let kind = match self.kind {
                Kind::Usage => "usage",
                Kind::Store => "store",
                Kind::NotFound => "not_found",
            };
            let object = json!({
                "command": command,
                "error": { "kind": kind, "message": self.message },
            });
            println!("{object}");
        }
    }
}
