//! What a command answers: text for people, one JSON object for scripts.

use serde_json::Value;

/// A successful command's answer, in both forms.
#[derive(Debug)]
pub struct Report {
    /// Lines for a person (no trailing newline).
    pub human: String,
    /// One object for a script; it names the command.
    pub json: Value,
}

impl Report {
    /// Prints the answer on stdout: the JSON object on one line, or the text.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json);
        } else {
            println!("{}", self.human);
        }
    }
}
