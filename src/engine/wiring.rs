//! Wiring a pipeline: the rings between readers, workers and the writer, and the outputs.

use super::*;

/// The rings of a pipeline: reader r -> worker w (and back), worker w -> writer (and back).
pub(super) struct Rings {
    pub readers: Vec<ReaderIo>,
    pub workers: Vec<WorkerIo>,
    pub links: Vec<WorkerLink>,
}

/// Builds the rings for `inputs` readers and `shards` workers, and the parkers through which
/// each side wakes the other.
pub(super) fn wire(inputs: usize, shards: usize) -> Rings {
    use crate::primitives::backoff::Parker;
    let reader_parkers: Vec<_> = (0..inputs).map(|_| Parker::new()).collect();
    let worker_parkers: Vec<_> = (0..shards).map(|_| Parker::new()).collect();
    let writer = Parker::new();
    let ring = crate::shard::ring_batches(inputs);
    let mut readers: Vec<ReaderIo> = reader_parkers
        .iter()
        .map(|me| ReaderIo {
            to_workers: Vec::new(),
            returned: Vec::new(),
            me: Arc::clone(me),
            workers: worker_parkers.clone(),
        })
        .collect();
    let mut workers = Vec::new();
    let mut links = Vec::new();
    for me in &worker_parkers {
        let mut inputs = Vec::new();
        for rio in readers.iter_mut() {
            let (tx, rx) = RingBuffer::<InBatch>::new(ring);
            let (btx, brx) = RingBuffer::<InBatch>::new(ring + 4);
            rio.to_workers.push(tx);
            rio.returned.push(brx);
            inputs.push((rx, btx));
        }
        let (otx, orx) = RingBuffer::<OutBatch>::new(OUT_RING_BATCHES);
        let (obtx, obrx) = RingBuffer::<OutBatch>::new(OUT_RING_BATCHES + 8);
        workers.push(WorkerIo {
            inputs,
            out: otx,
            out_back: obrx,
            me: Arc::clone(me),
            readers: reader_parkers.clone(),
            writer: Arc::clone(&writer),
        });
        links.push(WorkerLink {
            from: orx,
            back: obtx,
            worker: Arc::clone(me),
            writer: Arc::clone(&writer),
        });
    }
    Rings {
        readers,
        workers,
        links,
    }
}

/// Opens `{log}`, `{stats}` and the user outputs. After a reload, an output that was open
/// already is appended to, not truncated again. What an operator should know about them (a
/// crash's unfinished Parquet files) goes into `notes` as `{log}` records, also said on stderr.
pub(super) fn open_outputs(
    cfg: &Config,
    carry: &mut crate::reconfig::Carry,
    notes: &mut Vec<Vec<u8>>,
) -> anyhow::Result<Vec<Sink>> {
    let own = |name: &str, what: &str| {
        let path = cfg.log_dir.join(name);
        FileSink::open(path.clone(), false).with_context(|| format!("cannot open {what} ({})", path.display()))
    };
    let mut sinks: Vec<Sink> = vec![
        Box::new(own("dragonfly-mle.log", "{log}")?),
        Box::new(own("dragonfly-mle-stats.log", "{stats}")?),
    ];
    for (i, o) in cfg.outputs.iter().enumerate() {
        let what = |path: &std::path::Path| format!("outputs[{}] ({}): cannot open {}", i + 1, o.tag, path.display());
        sinks.push(match &o.uri {
            // After a reload, an output that was open already is appended to, not truncated.
            OutputUri::File { path, truncate } => Box::new(
                FileSink::open(path.clone(), carry.opened.insert(path.clone()) && *truncate)
                    .with_context(|| what(path))?,
            ),
            OutputUri::Zfile { path, truncate } => {
                let s = ZfileSink::open(path.clone(), carry.opened.insert(path.clone()) && *truncate)
                    .with_context(|| what(path))?;
                if let Some(r) = &s.repaired {
                    let line = crate::diag::line(crate::diag::Kind::OutputRepaired, &[("output", &o.tag)], r);
                    crate::diag::stderr_report(&line);
                    notes.push(line);
                }
                Box::new(s)
            }
            OutputUri::Ipc { path, kind } => Box::new(IpcSink::open(path.clone(), *kind, o.policy.drop_when_full)),
            OutputUri::Parquet { dir, prefix, opts } => {
                // Its files are made later, one at a time: a directory where none can be made
                // is refused now, as `check` refuses it (every row would be lost).
                let host = crate::privilege::host_path(dir);
                super::check::writable_dir(&host)
                    .and_then(|()| {
                        crate::privilege::helper_user().map_or(Ok(()), |u| super::check::writable_by(&host, u))
                    })
                    .with_context(|| format!("outputs[{}] ({}): cannot write in {}", i + 1, o.tag, dir.display()))?;
                let s = crate::sink::parquet::ParquetSink::open(dir.clone(), prefix.clone(), opts.clone())
                    .with_context(|| what(dir))?;
                if let Some(r) = s.stale_report() {
                    let line = crate::diag::line(crate::diag::Kind::OutputStaleFiles, &[("output", &o.tag)], &r);
                    crate::diag::stderr_report(&line);
                    notes.push(line);
                }
                Box::new(s)
            }
            OutputUri::Kafka {
                brokers,
                topic,
                key,
                queue,
            } => Box::new(
                KafkaSink::open(brokers, topic, *key, *queue)
                    .with_context(|| format!("outputs[{}] ({}): cannot create the Kafka producer", i + 1, o.tag))?,
            ),
        });
    }
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use crate::shard::{RING_BATCHES_MIN, WORKER_BATCHES};

    /// One reader gets a worker's whole share of batches in flight; more readers split it,
    /// down to the floor each ring keeps for a Kafka fetch's burst.
    #[test]
    fn a_workers_batches_in_flight_are_shared_by_its_input_rings() {
        for (inputs, want) in [(1, WORKER_BATCHES), (2, WORKER_BATCHES / 2), (64, RING_BATCHES_MIN)] {
            let rings = super::wire(inputs, 2);
            assert_eq!(rings.readers.len(), inputs);
            for r in &rings.readers {
                assert_eq!(r.to_workers.len(), 2);
                for tx in &r.to_workers {
                    assert_eq!(tx.buffer().capacity(), want, "{inputs} inputs");
                }
                for back in &r.returned {
                    assert_eq!(back.buffer().capacity(), want + 4, "{inputs} inputs");
                }
            }
        }
    }
}
