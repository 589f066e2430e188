//! API errors: a Kinesis error name, a message, and an HTTP status.

use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: &'static str,
    pub message: String,
    pub status: u16,
}

impl ApiError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> ApiError {
        let status = if kind == "InternalFailure" { 500 } else { 400 };
        ApiError {
            kind,
            message: message.into(),
            status,
        }
    }

    pub fn serialization(message: impl Into<String>) -> ApiError {
        ApiError::new("SerializationException", message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new("InvalidArgumentException", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new("ResourceNotFoundException", message)
    }

    /// The body Kinesis sends: `__type` and `message` (`Message` for
    /// serialization errors, as AWS does).
    pub fn body(&self) -> serde_json::Value {
        if self.kind == "SerializationException" {
            json!({"__type": self.kind, "Message": self.message})
        } else {
            json!({"__type": self.kind, "message": self.message})
        }
    }
}

impl From<shardlog_stream::Error> for ApiError {
    fn from(e: shardlog_stream::Error) -> ApiError {
        let kind = e.kinesis_name();
        let message = match &e {
            // Storage details stay in the server's log; clients get the name.
            shardlog_stream::Error::Storage(inner) if !inner.is_retriable() => {
                tracing::error!(error = %e, "storage failure");
                "Internal service failure.".to_string()
            }
            _ => e.to_string(),
        };
        ApiError::new(kind, message)
    }
}

/// Collects constraint violations in Kinesis's ValidationException wording.
#[derive(Debug, Default)]
pub struct Violations(Vec<String>);

impl Violations {
    pub fn add(&mut self, value: Option<&str>, member: &str, constraint: &str) {
        let shown = match value {
            Some(v) => format!("'{v}'"),
            None => "null".to_string(),
        };
        self.0.push(format!(
            "Value {shown} at '{member}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// Whether nothing was found wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let n = self.0.len();
        let list: Vec<String> = self.0.into_iter().take(10).collect();
        Err(ApiError::new(
            "ValidationException",
            format!(
                "{n} validation error{} detected: {}",
                if n == 1 { "" } else { "s" },
                list.join("; ")
            ),
        ))
    }
}
