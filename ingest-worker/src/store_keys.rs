//! Store ids → `stores.store_key`. The readers intern ids into dense local numbers ([`StoreIds`]); this
//! pre-interns the ids already in the database in key order, so local number `i` maps to `db_keys[i]` and,
//! as long as keys are handed out in ascending order, sorting by local number is sorting by key.

use std::collections::HashMap;

use diesel::mysql::MysqlConnection;
use shared_model::models::stores;
use uptime_core::input::StoreIds;

use crate::error::FileError;

pub struct StoreKeys {
    pub ids: StoreIds,
    db_keys: Vec<u32>,
}

impl StoreKeys {
    /// Reads every known store.
    pub fn load(conn: &mut MysqlConnection) -> Result<StoreKeys, FileError> {
        let known = stores::all(conn)?;
        let mut ids = StoreIds::new();
        let mut db_keys = Vec::with_capacity(known.len());
        for store in known {
            ids.intern(&store.store_id);
            db_keys.push(store.store_key);
        }
        Ok(StoreKeys { ids, db_keys })
    }

    /// Inserts the ids a reader interned since the last call and learns their keys. Returns how many ids
    /// were new to the database.
    pub fn sync(&mut self, conn: &mut MysqlConnection) -> Result<usize, FileError> {
        let first_new = self.db_keys.len();
        if self.ids.len() == first_new {
            return Ok(0);
        }
        let new_ids: Vec<&str> = self.ids.iter().skip(first_new).collect();
        let highest_known = self.db_keys.iter().copied().max().unwrap_or(0);
        let added = stores::insert_missing(conn, &new_ids)?;
        let mut keys: HashMap<String, u32> =
            stores::after(conn, highest_known)?.into_iter().map(|s| (s.store_id, s.store_key)).collect();
        if keys.len() < new_ids.len() {
            // Someone else added some of these ids (below our highest key): ask for them by name.
            let missing: Vec<&str> = new_ids.iter().copied().filter(|id| !keys.contains_key(*id)).collect();
            keys.extend(stores::find(conn, &missing)?.into_iter().map(|s| (s.store_id, s.store_key)));
        }
        for id in &new_ids {
            let key = keys.get(*id).copied().ok_or_else(|| FileError::StoreKeyMissing((*id).to_owned()))?;
            self.db_keys.push(key);
        }
        Ok(added)
    }

    /// The database key of a local number. Valid for every number interned before the last [`Self::sync`].
    pub fn key(&self, local: u32) -> u32 {
        self.db_keys[local as usize]
    }
}
