//! One-line rendering of an error and its sources, for messages and logs.

/// The error and its sources on one line. HTTP clients often say only "dispatch failure" or
/// "client error" at the top, with the useful part (connection refused, DNS) in the sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_error() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Top(#[source] std::io::Error);
        let top = Top(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&top), "dispatch failure: connection refused");
    }
}
