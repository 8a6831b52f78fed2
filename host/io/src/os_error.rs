//! OS errors worded for people: the message without std's `(os error N)`.

use std::io;

/// `No such file or directory`, not `No such file or directory (os error 2)`.
pub fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn drops_the_errno_suffix() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(super::describe(&e), "No such file or directory");
    }
}
