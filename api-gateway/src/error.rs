//! Every error answer is JSON, `{"error": "<human sentence>"}`, with a fitting status. Handlers return
//! [`ApiError`]; what the framework answers by itself (unknown route, a body it refused, a query it could
//! not parse) is rewritten into the same shape by [`json_error_bodies`].

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The report existed but is older than the retention.
    #[error("report {report_id} expired at {expired_at}; its CSV is deleted: trigger a new report")]
    Gone { report_id: String, expired_at: String },
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed { method: String, allowed: &'static str },
    /// The report exists but is not Complete; the body is its status, with an `error` sentence.
    #[error("report {report_id} is not complete")]
    NotComplete { report_id: String, body: serde_json::Value },
    /// The request is well formed but contradicts an earlier one (an idempotency key reused).
    #[error("{0}")]
    Unprocessable(String),
    #[error("the request body is larger than the {0} bytes this API accepts")]
    PayloadTooLarge(usize),
    /// No token, or one the gateway does not know (answered with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// A known token whose role is too low for the route.
    #[error("{0}")]
    Forbidden(String),
    /// Admission control refused the request; try again after `retry_after_s` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_s: u64 },
    /// The gateway is at a limit of its own (concurrent downloads); try again after `retry_after_s`.
    #[error("{message}")]
    Busy { message: String, retry_after_s: u64 },
    #[error("the database is unavailable; try again shortly")]
    DatabaseUnavailable(#[source] anyhow::Error),
    #[error("an internal error occurred; it has been logged")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
}

impl ApiError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(error.into())
    }

    pub fn unknown_report(report_id: &str) -> Self {
        ApiError::NotFound(format!("there is no report with id {report_id:?}"))
    }
}

/// A database call that failed, by whether waiting can help.
impl From<DbCallError> for ApiError {
    fn from(error: DbCallError) -> Self {
        match error {
            DbCallError::Pool(e) => ApiError::DatabaseUnavailable(e.into()),
            DbCallError::Query(DieselError::DatabaseError(
                kind @ (DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection),
                info,
            )) => ApiError::DatabaseUnavailable(anyhow::anyhow!("{kind:?}: {}", info.message())),
            DbCallError::Query(e) => ApiError::Internal(e.into()),
            DbCallError::Canceled => ApiError::Internal(DbCallError::Canceled.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbCallError {
    #[error("no database connection: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] DieselError),
    #[error("the blocking task of a database call was canceled")]
    Canceled,
}

/// A JSON error answer with `status` and `message`.
pub fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { error: message })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotComplete { .. } => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::DatabaseUnavailable(cause) | ApiError::Internal(cause) => {
                log::error!("{self}: {cause:#}");
            }
            _ => {}
        }
        let mut response = match self {
            ApiError::NotComplete { body, .. } => HttpResponse::Conflict().json(body),
            _ => json_error(self.status_code(), &self.to_string()),
        };
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed { allowed, .. } => {
                headers.insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_s, .. } | ApiError::Busy { retry_after_s, .. } => {
                headers.insert(header::RETRY_AFTER, header::HeaderValue::from(*retry_after_s));
            }
            _ => {}
        }
        response
    }
}

/// Answers any route nobody serves.
pub async fn unknown_route(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("there is nothing at {}", request.path())))
}

/// The fallback of a resource: the path exists but not with this method.
pub fn method_not_allowed(
    allowed: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone {
    move |request: HttpRequest| {
        std::future::ready(Err(ApiError::MethodNotAllowed { method: request.method().to_string(), allowed }))
    }
}

/// The last line of defence: an error answer whose body is not JSON (the framework's own answers to a
/// malformed path, an unreadable body, …) gets `{"error": …}` with the standard sentence for its status.
pub fn json_error_bodies<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(rewrite_as_json)
}

fn rewrite_as_json<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = response
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(response.map_into_left_body()));
    }
    let status = response.status();
    let sentence = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed here".to_owned(),
        StatusCode::NOT_FOUND => "there is nothing here".to_owned(),
        _ => status.canonical_reason().map_or_else(|| format!("error {}", status.as_u16()), |r| r.to_lowercase()),
    };
    let (request, old) = response.into_parts();
    let mut new = json_error(status, &sentence);
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().append(name.clone(), value.clone());
        }
    }
    let response: ServiceResponse<EitherBody<B, BoxBody>> =
        ServiceResponse::new(request, new).map_into_boxed_body().map_into_right_body();
    Ok(ErrorHandlerResponse::Response(response))
}
