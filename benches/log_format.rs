//! Micro-benchmarks of the CommitLog's hot pure functions: encoding an entry (header and
//! crc32c), decoding and checking one, and scanning a segment's bytes at recovery.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel::log::entry::{decode_entry, encode_entry, encode_header, EntryType};
use keel::log::segment::scan_segment;

fn entry_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("entry");
    for size in [128usize, 1024, 64 * 1024] {
        let data = vec![0x42u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode_header", size), &data, |b, data| {
            b.iter(|| {
                encode_header(
                    7,
                    1_000_000,
                    EntryType::Normal,
                    &[],
                    std::hint::black_box(data),
                )
            })
        });
        let encoded = encode_entry(7, 1_000_000, EntryType::Normal, &[], &data);
        group.bench_with_input(
            BenchmarkId::new("decode_checked", size),
            &encoded,
            |b, bytes| {
                b.iter(|| {
                    decode_entry(std::hint::black_box(bytes), 1 << 20).map(|v| v.header.index)
                })
            },
        );
    }
    group.finish();
}

fn segment_scan(c: &mut Criterion) {
    let mut bytes = Vec::new();
    let mut index = 1;
    while bytes.len() < 8 * 1024 * 1024 {
        bytes.extend(encode_entry(
            1,
            index,
            EntryType::Normal,
            &[],
            &[0x17u8; 1024],
        ));
        index += 1;
    }
    bytes.resize(bytes.len() + 64 * 1024, 0);
    let mut group = c.benchmark_group("recovery");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.sample_size(20);
    group.bench_function("scan_8MiB_of_1KiB_entries", |b| {
        b.iter(|| scan_segment(std::hint::black_box(&bytes), 1, 0, 1 << 20, None).data_end)
    });
    group.finish();
}

criterion_group!(benches, entry_codec, segment_scan);
criterion_main!(benches);
