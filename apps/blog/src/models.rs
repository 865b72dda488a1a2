//! The blog's entities as clients see them (JSON in camelCase) and as rows decode into them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};
use validator::Validate;

/// A registered user. Never carries the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// The e-mail address the user logs in with, lower case.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// When the user registered.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// A blog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The entry's id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Text of the entry.
    pub content: String,
    /// The author's id.
    pub user_id: i64,
    /// When the entry was written.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When the entry was last changed.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// A comment on an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    /// The comment's id.
    pub id: i64,
    /// Text of the comment.
    pub body: String,
    /// The entry it comments on.
    pub entry_id: i64,
    /// The author's id.
    pub user_id: i64,
    /// When the comment was written.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When the comment was last changed.
    #[sqlx(try_from = "String")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// A slice of a list: `?limit=&offset=` over REST. Missing fields take their defaults
/// (the first [`Page::DEFAULT_LIMIT`] items); [`Validate`] checks the bounds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, Validate, utoipa::IntoParams, utoipa::ToSchema,
)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// How many items at most, 1 to 100.
    #[validate(range(min = 1, max = Page::MAX_LIMIT))]
    #[param(minimum = 1, maximum = 100, default = 20)]
    #[schema(minimum = 1, maximum = 100, default = 20)]
    pub limit: i64,
    /// How many items to skip, 0 or more.
    #[validate(range(min = 0))]
    #[param(minimum = 0, default = 0)]
    #[schema(minimum = 0, default = 0)]
    pub offset: i64,
}

impl Page {
    /// The limit when none is given.
    pub const DEFAULT_LIMIT: i64 = 20;
    /// The largest limit a client may ask for.
    pub const MAX_LIMIT: i64 = 100;
}

impl Default for Page {
    fn default() -> Self {
        Self { limit: Self::DEFAULT_LIMIT, offset: 0 }
    }
}

/// A point in time, UTC, with millisecond precision.
///
/// Written as RFC 3339 of fixed width (`2024-05-01T12:00:00.000Z`), in JSON and in the
/// database alike, so that text order is time order in both SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to milliseconds.
    pub fn now() -> Self {
        Self::from(OffsetDateTime::now_utc())
    }

    /// The time as a `time` value (UTC).
    pub fn get(self) -> OffsetDateTime {
        self.0
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Self {
        let t = t.to_offset(UtcOffset::UTC);
        // A millisecond is always a valid nanosecond count; the fallback is unreachable.
        Self(t.replace_millisecond(t.millisecond()).unwrap_or(t))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let text = self.0.format(&format).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl FromStr for Timestamp {
    type Err = time::error::Parse;

    /// Any RFC 3339 time; converted to UTC and truncated to milliseconds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OffsetDateTime::parse(s, &Rfc3339).map(Self::from)
    }
}

impl TryFrom<String> for Timestamp {
    type Error = time::error::Parse;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn timestamps_are_fixed_width_utc_millis() {
        let t = Timestamp::from(datetime!(2024-05-01 14:00:00.123456 +02:00));
        assert_eq!(t.to_string(), "2024-05-01T12:00:00.123Z");
        assert_eq!(
            Timestamp::from(datetime!(2024-05-01 12:00 UTC)).to_string(),
            "2024-05-01T12:00:00.000Z"
        );
        assert_eq!("2024-05-01T14:00:00.123+02:00".parse::<Timestamp>().ok(), Some(t));
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn pages_default_and_check_their_bounds() {
        let page: Option<Page> = serde_json::from_value(json!({})).ok();
        assert_eq!(page, Some(Page { limit: 20, offset: 0 }));
        let page: Option<Page> = serde_json::from_value(json!({ "offset": 5 })).ok();
        assert_eq!(page, Some(Page { limit: 20, offset: 5 }));
        assert!(Page { limit: 1, offset: 0 }.validate().is_ok());
        assert!(Page { limit: 100, offset: 1_000 }.validate().is_ok());
        let message = |page: Page| page.validate().map_err(|e| wsgate::describe_validation(&e));
        assert_eq!(
            message(Page { limit: 0, offset: 0 }),
            Err("limit must be between 1 and 100.".into())
        );
        assert_eq!(
            message(Page { limit: 101, offset: 0 }),
            Err("limit must be between 1 and 100.".into())
        );
        assert_eq!(
            message(Page { limit: 10, offset: -1 }),
            Err("offset must be at least 0.".into())
        );
    }

    #[test]
    fn user_json_is_camel_case() {
        let user = User {
            id: 1,
            email: "a@example.com".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            created_at: Timestamp::from(datetime!(2024-05-01 12:00 UTC)),
        };
        let value = serde_json::to_value(&user).ok();
        assert_eq!(
            value,
            Some(json!({
                "id": 1, "email": "a@example.com", "firstName": "Ada", "lastName": "Lovelace",
                "createdAt": "2024-05-01T12:00:00.000Z"
            }))
        );
        let back: Option<User> = value.and_then(|v| serde_json::from_value(v).ok());
        assert_eq!(back, Some(user));
    }
}
