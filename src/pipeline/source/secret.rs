//! Secrets of sources (API tokens, SASL passwords): named in YAML, read from the environment at
//! run time, never logged.

/// The value of the secret named `name`: the environment variable itself, else the file
/// `{name}_FILE` names; trimmed. `Err` says what is wrong, with the way to fix it.
pub fn lookup(name: &str) -> Result<String, String> {
    let missing = |detail: String| {
        format!(
            "secret `{name}` {detail}: set the environment variable {name} (or {name}_FILE to a file holding it)"
        )
    };
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => return Ok(value.trim().to_string()),
        Ok(_) => return Err(missing("is empty".into())),
        Err(_) => {}
    }
    let file_var = format!("{name}_FILE");
    let Ok(path) = std::env::var(&file_var) else {
        return Err(missing("is not set".into()));
    };
    match std::fs::read_to_string(&path) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        Ok(_) => Err(missing(format!("file {path} (from {file_var}) is empty"))),
        Err(e) => Err(missing(format!(
            "file {path} (from {file_var}) is unreadable: {e}"
        ))),
    }
}
