//! The API's request bodies, typed. A body is read as a JSON object first
//! (as the Python server does: `"x"` or `[1, 2]` is no request), then its
//! fields are checked in a fixed order, so the first bad field names the
//! error, word for word as before.

use axum::extract::{FromRequest, OptionalFromRequest, Request};
use serde_json::{Map, Value};

use super::errors::ApiError;
use super::extract::JsonBody;

/// A body whose fields do not fit: its message is the 422's.
#[derive(Debug, PartialEq, Eq)]
pub struct BadField(pub String);

impl From<BadField> for ApiError {
    fn from(BadField(message): BadField) -> Self {
        ApiError::Unprocessable(message)
    }
}

/// A request type built from the fields of a JSON object.
pub trait FromObject: Sized {
    fn from_object(object: &Map<String, Value>) -> Result<Self, BadField>;
}

/// The extractor: a JSON object checked into `T`. `Option<Body<T>>` takes
/// an empty body as `None`.
pub struct Body<T>(pub T);

impl<T: FromObject, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBody(object) =
            <JsonBody<Map<String, Value>> as FromRequest<S>>::from_request(request, state).await?;
        Ok(Self(T::from_object(&object)?))
    }
}

impl<T: FromObject, S: Send + Sync> OptionalFromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let object =
            <JsonBody<Map<String, Value>> as OptionalFromRequest<S>>::from_request(request, state)
                .await?;
        match object {
            Some(JsonBody(object)) => Ok(Some(Self(T::from_object(&object)?))),
            None => Ok(None),
        }
    }
}

/// `POST /api/v1/clusters`: the user's options, empty when not sent.
#[derive(Debug, Default, PartialEq)]
pub struct CreateRequest {
    pub cluster_options: Map<String, Value>,
}

impl FromObject for CreateRequest {
    fn from_object(object: &Map<String, Value>) -> Result<Self, BadField> {
        let cluster_options = match object.get("cluster_options") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(options)) => options.clone(),
            Some(other) => {
                return Err(BadField(format!("cluster_options must be an object, got {other}")));
            }
        };
        Ok(Self { cluster_options })
    }
}

/// `POST .../scale`: the worker count asked for.
#[derive(Debug, PartialEq)]
pub struct ScaleRequest {
    pub count: u32,
}

impl FromObject for ScaleRequest {
    fn from_object(object: &Map<String, Value>) -> Result<Self, BadField> {
        let count = count(object.get("count"), "Scale")?
            .ok_or_else(|| BadField("Scale expects a non-negative integer, got null".into()))?;
        Ok(Self { count })
    }
}

/// `POST .../adapt`: bounds (either may be left to the limits) and whether
/// adaptive scaling is on.
#[derive(Debug, PartialEq)]
pub struct AdaptRequest {
    pub minimum: Option<u32>,
    pub maximum: Option<u32>,
    pub active: bool,
}

impl FromObject for AdaptRequest {
    fn from_object(object: &Map<String, Value>) -> Result<Self, BadField> {
        let minimum = count(object.get("minimum"), "Adapt minimum")?;
        let maximum = count(object.get("maximum"), "Adapt maximum")?;
        let active = match object.get("active") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(BadField(format!("active must be a boolean, got {v}"))),
        };
        if let (Some(min), Some(max)) = (minimum, maximum)
            && min > max
        {
            return Err(BadField(format!("minimum ({min}) must be no more than maximum ({max})")));
        }
        Ok(Self { minimum, maximum, active })
    }
}

/// A count in a request: a non-negative integer, or `None` for null.
fn count(value: Option<&Value>, what: &str) -> Result<Option<u32>, BadField> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= u32::MAX as u64 => Ok(Some(n as u32)),
            _ => Err(BadField(format!("{what} expects a non-negative integer, got {v}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_first_bad_field_names_the_error() {
        let bad = |v: Value| AdaptRequest::from_object(&object(v)).unwrap_err().0;
        assert_eq!(
            bad(json!({"minimum": -1, "active": 3})),
            "Adapt minimum expects a non-negative integer, got -1"
        );
        assert_eq!(bad(json!({"active": "yes"})), "active must be a boolean, got \"yes\"");
        assert_eq!(
            bad(json!({"minimum": 3, "maximum": 2})),
            "minimum (3) must be no more than maximum (2)"
        );
        let scale = |v: Value| ScaleRequest::from_object(&object(v));
        assert_eq!(
            scale(json!({})).unwrap_err().0,
            "Scale expects a non-negative integer, got null"
        );
        assert_eq!(scale(json!({"count": 2})).unwrap(), ScaleRequest { count: 2 });
        let create = CreateRequest::from_object(&object(json!({"cluster_options": [1]})));
        assert_eq!(create.unwrap_err().0, "cluster_options must be an object, got [1]");
    }
}
