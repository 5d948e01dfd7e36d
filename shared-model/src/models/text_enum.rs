//! Status columns are VARCHARs holding a fixed set of words; the models read and write them as Rust
//! enums, so no caller compares or spells the words. [`text_enum!`] gives an enum its words and the
//! diesel conversions both ways.

/// `text_enum!(Type, Variant => "word", …)`: `as_str`, diesel `ToSql`/`FromSql` for `Varchar` on MySQL.
/// The enum needs `#[derive(diesel::AsExpression, diesel::FromSqlRow)]` and
/// `#[diesel(sql_type = diesel::sql_types::Varchar)]`, and an inherent `fn from_word(&str) ->
/// Option<Self>` decides what a word this code does not know means (an error or a safe reading).
macro_rules! text_enum {
    ($type:ident, $($variant:ident => $word:literal),+ $(,)?) => {
        impl $type {
            /// The word in the column (and in the API and the logs).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $word,)+
                }
            }

            fn known_word(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($type::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Varchar, diesel::mysql::Mysql> for $type {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::mysql::Mysql>,
            ) -> diesel::serialize::Result {
                use std::io::Write as _;
                out.write_all(self.as_str().as_bytes())?;
                Ok(diesel::serialize::IsNull::No)
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Varchar, diesel::mysql::Mysql> for $type {
            fn from_sql(bytes: diesel::mysql::MysqlValue<'_>) -> diesel::deserialize::Result<Self> {
                let word = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Varchar,
                    diesel::mysql::Mysql,
                >>::from_sql(bytes)?;
                $type::from_word(&word)
                    .ok_or_else(|| format!("{word:?} is not a {} this code knows", stringify!($type)).into())
            }
        }
    };
}

pub(crate) use text_enum;
