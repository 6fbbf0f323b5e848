"""The peer job: SPEC §2's seven streaming queries in PySpark Structured Streaming.

It reads the same Kafka topics as `pipeline streaming` (the generator's JSON values), computes the
same seven queries with the same windows, watermark delay and trigger intervals, and writes every
query's rows to a null sink: a `foreachBatch` that counts the rows and, for the three per-record
alert queries, notes when each alert row reached it (wall time) next to the Kafka timestamp of the
record that raised it. Nothing is stored.

Modes:
  drain  every query with `trigger(availableNow=True)`: consume the backlog on the topics and stop.
         `--warmup` first drains it once in the same JVM with its own checkpoints, discarded, so
         the measured pass runs in a warm JVM (classes loaded, code compiled).
  live   windowed queries with the 1-minute processing-time trigger of the database sinks, alert
         queries with the default trigger (a micro-batch as soon as the previous one ends);
         creates `--ready-file` once every query has run its first batch, and stops every query
         once `--stop-file` exists. `--all-asap` gives the windowed queries the default trigger
         too (the sustainable-throughput search: see bench.py), and `--progress-file` is
         rewritten every `--progress-period-s` with the offsets each query has processed.

It writes a JSON result (`--result`): the measured pass's wall time, rows per query, the alert
latency samples (ms) and when the measured pass started and ended (for the memory sampler).

Only the standard library and pyspark are imported, so `python3 -m py_compile job.py` checks it
without pyspark installed.
"""

import argparse
import json
import os
import shutil
import sys
import threading
import time

# SPEC §2 and pipeline/src/engine/config.rs defaults.
WATERMARK = "1 minute"
TRIGGER = "1 minute"  # trigger_interval_ms of the database sinks
TOPICS = ("traffic-sensors", "public-transport", "incidents")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--topic-prefix", required=True)
    p.add_argument("--mode", choices=("drain", "live"), required=True)
    p.add_argument("--warmup", action="store_true", help="drain once first, discarded")
    p.add_argument("--ready-file", help="live: created once every query has run a batch")
    p.add_argument("--stop-file", help="live: stop every query once this file exists")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--result", required=True, help="JSON result file")
    p.add_argument("--shuffle-partitions", type=int, default=2)
    p.add_argument("--all-asap", action="store_true",
                   help="live: every query at the default trigger, windowed ones too")
    p.add_argument("--progress-file",
                   help="live: JSON {query: {topic: records processed}}, rewritten periodically")
    p.add_argument("--progress-period-s", type=float, default=0.5)
    return p.parse_args(argv)


class NullSink:
    """Counts rows per query; notes the arrival of each alert row. Thread-safe: Spark calls
    `foreachBatch` functions of different queries from different threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows = {}
        self.batches = {}
        self.alert_latency_ms = []
        self.measuring = False

    def counting(self, query):
        def f(df, batch_id):
            n = df.count()
            with self.lock:
                self.rows[query] = self.rows.get(query, 0) + n
                self.batches[query] = self.batches.get(query, 0) + 1
        return f

    def alerts(self, query):
        def f(df, batch_id):
            # The whole plan runs in collect(); the rows have reached the sink when it returns.
            stamps = [r[0] for r in df.select("kafka_ts_ms").collect()]
            now_ms = time.time() * 1000.0
            with self.lock:
                self.rows[query] = self.rows.get(query, 0) + len(stamps)
                self.batches[query] = self.batches.get(query, 0) + 1
                if self.measuring:
                    self.alert_latency_ms.extend(now_ms - t for t in stamps)
        return f


def build_queries(spark, args):
    """The seven queries: (name, streaming DataFrame, output mode, is_alert)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    def source(topic):
        # One Kafka source per query, as Structured Streaming runs each query on its own source
        # (the original job did the same).
        return (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", args.bootstrap)
            .option("subscribe", args.topic_prefix + topic)
            .option("startingOffsets", "earliest")
            .option("failOnDataLoss", "false")
            .load()
        )

    def parsed(topic, schema):
        # event_time: the message timestamp (RFC 3339, UTC); kafka_ts_ms: the record's Kafka
        # timestamp (its intended produce time), for the alert latency.
        df = source(topic).select(
            F.from_json(F.col("value").cast("string"), schema).alias("m"),
            (F.unix_micros(F.col("timestamp")) / 1000.0).alias("kafka_ts_ms"),
        )
        df = df.select("m.*", "kafka_ts_ms")
        df = df.withColumn("event_time", F.try_to_timestamp(F.col("timestamp")))
        return df.where(F.col("event_time").isNotNull())

    loc = T.StructType([T.StructField("lat", T.DoubleType()), T.StructField("lon", T.DoubleType())])
    traffic_schema = T.StructType([
        T.StructField("sensor_id", T.StringType()),
        T.StructField("timestamp", T.StringType()),
        T.StructField("road_id", T.StringType()),
        T.StructField("road_name", T.StringType()),
        T.StructField("zone_id", T.StringType()),
        T.StructField("location", loc),
        T.StructField("speed_kmh", T.DoubleType()),
        T.StructField("vehicle_flow", T.LongType()),
        T.StructField("occupancy_percent", T.DoubleType()),
        T.StructField("congestion_level", T.StringType()),
        T.StructField("data_quality", T.StringType()),
    ])
    transport_schema = T.StructType([
        T.StructField("vehicle_id", T.StringType()),
        T.StructField("timestamp", T.StringType()),
        T.StructField("line_id", T.StringType()),
        T.StructField("line_number", T.StringType()),
        T.StructField("current_stop", T.StringType()),
        T.StructField("next_stop", T.StringType()),
        T.StructField("direction", T.StringType()),
        T.StructField("location", loc),
        T.StructField("speed_kmh", T.DoubleType()),
        T.StructField("passenger_count", T.LongType()),
        T.StructField("capacity", T.LongType()),
        T.StructField("occupancy_rate", T.DoubleType()),
        T.StructField("delay_minutes", T.DoubleType()),
        T.StructField("status", T.StringType()),
    ])
    incident_schema = T.StructType([
        T.StructField("incident_id", T.StringType()),
        T.StructField("timestamp", T.StringType()),
        T.StructField("type", T.StringType()),
        T.StructField("severity", T.StringType()),
        T.StructField("location", T.StructType([
            T.StructField("road_id", T.StringType()),
            T.StructField("road_name", T.StringType()),
            T.StructField("zone_id", T.StringType()),
            T.StructField("lat", T.DoubleType()),
            T.StructField("lon", T.DoubleType()),
        ])),
        T.StructField("description", T.StringType()),
        T.StructField("estimated_duration_min", T.LongType()),
        T.StructField("affected_lanes", T.LongType()),
        T.StructField("status", T.StringType()),
    ])

    def windowed(df, size, slide):
        w = F.window("event_time", size, slide)
        return df.withWatermark("event_time", WATERMARK), w

    def window_cols():
        return [
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
        ]

    queries = []

    # 1. traffic_aggregations: (zone_id, road_id), 5 min sliding every 1 min.
    t, w = windowed(parsed("traffic-sensors", traffic_schema), "5 minutes", "1 minute")
    q1 = (
        t.groupBy(w, "zone_id", "road_id")
        .agg(
            F.avg("speed_kmh").alias("avg_speed"),
            F.min("speed_kmh").alias("min_speed"),
            F.max("speed_kmh").alias("max_speed"),
            F.sum("vehicle_flow").alias("total_vehicles"),
            F.avg("occupancy_percent").alias("avg_occupancy"),
            F.count(F.lit(1)).alias("sensor_readings"),
        )
        .select(
            F.lit("traffic_aggregations").alias("query"), "zone_id", "road_id", *window_cols(),
            "avg_speed", "min_speed", "max_speed", "total_vehicles", "avg_occupancy",
            "sensor_readings",
            F.when(F.col("avg_speed") < 20, 1.0).when(F.col("avg_speed") < 35, 0.7)
            .when(F.col("avg_speed") < 50, 0.4).otherwise(0.1).alias("congestion_score"),
        )
    )
    queries.append(("traffic_aggregations", q1, "update", False))

    # 2. traffic_anomalies: per reading, one row per anomaly type (as the Rust engine emits).
    t = parsed("traffic-sensors", traffic_schema)
    kinds = F.array(
        F.when(F.col("speed_kmh") < 5, F.lit("severe_congestion")),
        F.when(F.col("occupancy_percent") > 95, F.lit("overcapacity")),
        F.when(F.col("data_quality") != "good", F.lit("data_quality_issue")),
    )
    q2 = (
        t.select("*", F.explode(F.filter(kinds, lambda k: k.isNotNull())).alias("anomaly_type"))
        .select(
            F.lit("traffic_anomalies").alias("query"), "sensor_id", "zone_id", "road_id",
            "event_time", "anomaly_type", "speed_kmh", "occupancy_percent", "data_quality",
            "kafka_ts_ms",
        )
    )
    queries.append(("traffic_anomalies", q2, "append", True))

    # 3. transport_metrics: line_id, 10 min sliding every 5 min.
    b, w = windowed(parsed("public-transport", transport_schema), "10 minutes", "5 minutes")
    q3 = (
        b.groupBy(w, "line_id")
        .agg(
            F.avg("delay_minutes").alias("avg_delay"),
            F.avg("occupancy_rate").alias("avg_occupancy"),
            # Distinct vehicles: Structured Streaming refuses count(DISTINCT) on a stream, so the
            # exact count is the size of the window's set of vehicle ids.
            F.size(F.collect_set("vehicle_id")).alias("active_vehicles"),
            F.count(F.lit(1)).alias("reports"),
            F.sum("passenger_count").alias("total_passengers"),
        )
        .select(
            F.lit("transport_metrics").alias("query"), "line_id", *window_cols(), "avg_delay",
            "avg_occupancy", "active_vehicles", "reports", "total_passengers",
            F.when(F.col("avg_delay") < 2, 1.0).when(F.col("avg_delay") < 5, 0.7)
            .otherwise(0.3).alias("punctuality_score"),
        )
    )
    queries.append(("transport_metrics", q3, "update", False))

    # 4. transport_alerts: overcrowded vehicle, per reading.
    b = parsed("public-transport", transport_schema)
    q4 = b.where(F.col("occupancy_rate") > 90).select(
        F.lit("transport_alerts").alias("query"), "vehicle_id", "line_id", "event_time",
        F.lit("overcrowded").alias("alert_type"), "occupancy_rate", "passenger_count", "capacity",
        "kafka_ts_ms",
    )
    queries.append(("transport_alerts", q4, "append", True))

    # 5. incident_aggregations: (zone_id, severity), 15 min sliding every 5 min.
    i, w = windowed(parsed("incidents", incident_schema), "15 minutes", "5 minutes")
    q5 = (
        i.groupBy(w, F.col("location.zone_id").alias("zone_id"), "severity")
        .agg(F.count(F.lit(1)).alias("count"))
        .select(
            F.lit("incident_aggregations").alias("query"), "zone_id", "severity", *window_cols(),
            "count",
            F.when((F.col("severity") == "critical") & (F.col("count") > 0), "red")
            .when((F.col("severity") == "high") & (F.col("count") > 2), "orange")
            .otherwise("yellow").alias("alert_level"),
        )
    )
    queries.append(("incident_aggregations", q5, "update", False))

    # 6. critical_incidents: every high or critical incident, at once.
    i = parsed("incidents", incident_schema)
    q6 = i.where(F.col("severity").isin("high", "critical")).select(
        F.lit("critical_incidents").alias("query"), "incident_id", "type", "severity",
        F.col("location.zone_id").alias("zone_id"), F.col("location.road_id").alias("road_id"),
        "event_time", "description", "kafka_ts_ms",
    )
    queries.append(("critical_incidents", q6, "append", True))

    # 7. mobility_index: city-wide, tumbling 5 min over traffic readings.
    t, w = windowed(parsed("traffic-sensors", traffic_schema), "5 minutes", "5 minutes")
    q7 = (
        t.groupBy(w)
        .agg(
            F.avg("speed_kmh").alias("city_avg_speed"),
            F.avg("occupancy_percent").alias("city_avg_occupancy"),
            F.count(F.lit(1)).alias("total_readings"),
        )
        .withColumn(
            "mobility_index",
            (F.col("city_avg_speed") / 50 * 0.6 + (100 - F.col("city_avg_occupancy")) / 100 * 0.4)
            * 100,
        )
        .select(
            F.lit("mobility_index").alias("query"), *window_cols(), "city_avg_speed",
            "city_avg_occupancy", "total_readings", "mobility_index",
            F.when(F.col("mobility_index") > 80, "excellent")
            .when(F.col("mobility_index") > 60, "good")
            .when(F.col("mobility_index") > 40, "moderate")
            .when(F.col("mobility_index") > 20, "poor")
            .otherwise("critical").alias("category"),
        )
    )
    queries.append(("mobility_index", q7, "update", False))
    return queries


def start_all(spark, args, sink, checkpoint_root, trigger_of):
    handles = []
    for name, df, mode, is_alert in build_queries(spark, args):
        fn = sink.alerts(name) if is_alert else sink.counting(name)
        writer = (
            df.writeStream.queryName(name)
            .outputMode(mode)
            .option("checkpointLocation", os.path.join(checkpoint_root, name))
            .foreachBatch(fn)
        )
        writer = trigger_of(writer, is_alert)
        handles.append(writer.start())
    return handles


def drain(spark, args, sink, checkpoint_root):
    """One availableNow pass over the backlog; returns its wall time, seconds."""
    started = time.time()
    handles = start_all(spark, args, sink, checkpoint_root, lambda w, _a: w.trigger(availableNow=True))
    for h in handles:
        h.awaitTermination()
        if h.exception() is not None:
            raise RuntimeError(f"query {h.name} failed: {h.exception()}")
    return started, time.time()


def processed_offsets(handles):
    """{query: {topic: records processed}}: the sum over the topic's partitions of the end offset
    of the query's last completed micro-batch (its progress is reported once the batch is
    committed). The benchmark's topics are fresh, so an offset is a count of records."""
    out = {}
    for h in handles:
        p = h.lastProgress
        if p is None:
            continue
        done = {}
        for src in p.sources:
            if not src.endOffset or src.endOffset == "null":
                continue
            for topic, parts in json.loads(src.endOffset).items():
                done[topic] = done.get(topic, 0) + sum(int(o) for o in parts.values())
        out[h.name] = done
    return out


def write_atomically(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def main(argv):
    args = parse_args(argv)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("smart-city-spark-peer").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.conf.set("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
    result = {"mode": args.mode, "spark_version": spark.version}
    ready = time.time()
    if args.mode == "drain":
        if args.warmup:
            warm = NullSink()
            w0, w1 = drain(spark, args, warm, os.path.join(args.checkpoint_dir, "warmup"))
            result["warmup_s"] = w1 - w0
            result["warmup_rows"] = warm.rows
            shutil.rmtree(os.path.join(args.checkpoint_dir, "warmup"), ignore_errors=True)
        sink = NullSink()
        sink.measuring = True
        t0, t1 = drain(spark, args, sink, os.path.join(args.checkpoint_dir, "measured"))
    else:
        sink = NullSink()
        sink.measuring = True

        def trigger_of(w, is_alert):
            # Alerts: as soon as possible (Spark's default trigger); windows: the 1-minute
            # trigger of the database sinks (SPEC §2, trigger_interval_ms), or also as soon as
            # possible with --all-asap, so the processed offsets advance continuously and a lag
            # sampled once a second is not a 60 s sawtooth.
            return w if is_alert or args.all_asap else w.trigger(processingTime=TRIGGER)

        t0 = time.time()
        handles = start_all(spark, args, sink, os.path.join(args.checkpoint_dir, "live"), trigger_of)
        ready = False
        period_s = args.progress_period_s if args.progress_file else 0.5
        while not (args.stop_file and os.path.exists(args.stop_file)):
            for h in handles:
                if h.exception() is not None:
                    raise RuntimeError(f"query {h.name} failed: {h.exception()}")
            if not ready and all(h.lastProgress is not None for h in handles):
                ready = time.time()
                if args.ready_file:
                    open(args.ready_file, "w").close()
            if args.progress_file:
                write_atomically(args.progress_file, {"epoch_s": time.time(),
                                                      "queries": processed_offsets(handles)})
            time.sleep(period_s)
        for h in handles:
            h.stop()
        t1 = time.time()
    result.update({
        "session_ready_epoch_s": ready,
        "measured_start_epoch_s": t0,
        "measured_end_epoch_s": t1,
        "measured_s": t1 - t0,
        "rows": sink.rows,
        "batches": sink.batches,
        "alert_latency_ms": sink.alert_latency_ms,
    })
    with open(args.result, "w") as f:
        json.dump(result, f)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
