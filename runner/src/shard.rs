//! Splitting a job's key space between runners: a stable partition by the key's first path
//! segment, so a whole top-level directory always belongs to one shard.

use ferry_api::contract::Shard;

/// The shard a key belongs to.
pub fn shard_of(key: &str, count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    let top = key.split_once('/').map_or(key, |(first, _)| first);
    let digest = blake3::hash(top.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(count)) as u32
}

/// Whether `shard` moves `key`.
pub fn owns(shard: Shard, key: &str) -> bool {
    shard_of(key, shard.count) == shard.index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_belongs_to_exactly_one_shard_and_directories_stay_together() {
        let keys: Vec<String> =
            (0..2000).map(|i| format!("dir{}/file{i}", i % 37)).chain((0..100).map(|i| format!("top{i}"))).collect();
        for count in [1, 2, 3, 7, 256] {
            for key in &keys {
                let owners = (0..count).filter(|&index| owns(Shard { index, count }, key)).count();
                assert_eq!(owners, 1, "{key} with {count} shards");
            }
        }
        assert_eq!(shard_of("dir3/a", 7), shard_of("dir3/b/c", 7));
    }
}
