// The reference Java client for linkd's integration tests: the official kafka-clients producer and
// consumer with their default settings, so tests observe what an unmodified Java application sees.
//
//   produce <bootstrap> <topic> <count> [compression]
//       Idempotent producer (the Java default). Record i has key "k<i>" and value "v<i>". Prints one JSON
//       line per acknowledged record {"partition":P,"offset":O}, then {"summary":{...}}. Exit 1 on error.
//   consume <bootstrap> <topic> <group> <expected-count> <timeout-ms> [read_committed|read_uncommitted]
//       Group consumer (subscribe, classic protocol, earliest reset, manual commitSync). Stops at
//       expected-count records or the timeout, commits, and prints one JSON object. Exit 0 either way:
//       the caller decides whether fewer records than expected is a failure.
//   transact <bootstrap> <topic> <transactional-id> <group> <transactions> <records> <abort-every>
//       Transactional producer: each transaction sends <records> records (value "t<n>-<i>") to partition 0,
//       adds offset <n+1> of <topic>-0 for <group> (sendOffsetsToTransaction), then commits, except every
//       <abort-every>-th (n % abort-every == abort-every - 1), which aborts. Prints {"committed":C,"aborted":A}.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class LinkdClient {
    private LinkdClient() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            usage();
        }
        switch (args[0]) {
            case "produce" -> {
                if (args.length < 4) usage();
                produce(args[1], args[2], Integer.parseInt(args[3]), args.length > 4 ? args[4] : "none");
            }
            case "consume" -> {
                if (args.length < 6) usage();
                consume(args[1], args[2], args[3], Integer.parseInt(args[4]), Long.parseLong(args[5]),
                        args.length > 6 ? args[6] : "read_uncommitted");
            }
            case "transact" -> {
                if (args.length < 8) usage();
                transact(args[1], args[2], args[3], args[4], Integer.parseInt(args[5]), Integer.parseInt(args[6]), Integer.parseInt(args[7]));
            }
            default -> usage();
        }
    }

    /** Client properties from the file named by the system property linkd.client.properties (security settings). */
    private static void addExtra(Properties props) throws java.io.IOException {
        String path = System.getProperty("linkd.client.properties");
        if (path == null || path.isEmpty()) return;
        try (java.io.Reader in = java.nio.file.Files.newBufferedReader(java.nio.file.Path.of(path))) {
            props.load(in);
        }
    }

    private static void usage() {
        System.err.println("usage: LinkdClient produce <bootstrap> <topic> <count> [compression]\n"
                + "       LinkdClient consume <bootstrap> <topic> <group> <expected-count> <timeout-ms> [isolation]\n"
                + "       LinkdClient transact <bootstrap> <topic> <transactional-id> <group> <transactions> <records> <abort-every>");
        System.exit(2);
    }

    private static void produce(String bootstrap, String topic, int count, String compression) throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
        props.put(ProducerConfig.CLIENT_ID_CONFIG, "linkd-tests-java-producer");
        // Idempotence and acks=all are the defaults; stated here so a reader does not have to know that.
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        addExtra(props);
        long started = System.nanoTime();
        Map<Integer, long[]> ranges = new TreeMap<>();
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            List<Future<RecordMetadata>> acks = new ArrayList<>(count);
            for (int i = 0; i < count; i++) {
                byte[] key = ("k" + i).getBytes(StandardCharsets.UTF_8);
                byte[] value = ("v" + i).getBytes(StandardCharsets.UTF_8);
                acks.add(producer.send(new ProducerRecord<>(topic, key, value)));
            }
            producer.flush();
            StringBuilder out = new StringBuilder();
            for (Future<RecordMetadata> ack : acks) {
                RecordMetadata md = ack.get();
                out.append("{\"partition\":").append(md.partition()).append(",\"offset\":").append(md.offset()).append("}\n");
                long[] range = ranges.computeIfAbsent(md.partition(), p -> new long[] {Long.MAX_VALUE, Long.MIN_VALUE, 0});
                range[0] = Math.min(range[0], md.offset());
                range[1] = Math.max(range[1], md.offset());
                range[2]++;
            }
            System.out.print(out);
        }
        StringBuilder summary = new StringBuilder("{\"summary\":{\"sent\":").append(count)
                .append(",\"compression\":").append(quote(compression))
                .append(",\"elapsed_ms\":").append((System.nanoTime() - started) / 1_000_000)
                .append(",\"partitions\":{");
        appendRanges(summary, ranges);
        summary.append("}}}");
        System.out.println(summary);
    }

    private static void transact(String bootstrap, String topic, String transactionalId, String group, int transactions,
                                 int records, int abortEvery) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.CLIENT_ID_CONFIG, "linkd-tests-java-transactional");
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        int committed = 0;
        int aborted = 0;
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            producer.initTransactions();
            for (int n = 0; n < transactions; n++) {
                producer.beginTransaction();
                for (int i = 0; i < records; i++) {
                    byte[] value = ("t" + n + "-" + i).getBytes(StandardCharsets.UTF_8);
                    producer.send(new ProducerRecord<>(topic, 0, null, value));
                }
                producer.sendOffsetsToTransaction(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(n + 1)),
                        new org.apache.kafka.clients.consumer.ConsumerGroupMetadata(group));
                if (n % abortEvery == abortEvery - 1) {
                    producer.abortTransaction();
                    aborted++;
                } else {
                    producer.commitTransaction();
                    committed++;
                }
            }
        }
        System.out.println("{\"committed\":" + committed + ",\"aborted\":" + aborted + "}");
    }

    private static void consume(String bootstrap, String topic, String group, int expected, long timeoutMs, String isolation) throws Exception {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "linkd-tests-java-consumer");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        addExtra(props);
        long started = System.nanoTime();
        long deadline = started + timeoutMs * 1_000_000L;
        List<ConsumerRecord<byte[], byte[]>> records = new ArrayList<>();
        Map<Integer, long[]> ranges = new TreeMap<>();
        Map<TopicPartition, OffsetAndMetadata> committed;
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.subscribe(List.of(topic));
            while (records.size() < expected && System.nanoTime() < deadline) {
                long leftMs = Math.max(1, (deadline - System.nanoTime()) / 1_000_000);
                for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(Math.min(leftMs, 500)))) {
                    records.add(rec);
                    long[] range = ranges.computeIfAbsent(rec.partition(), p -> new long[] {Long.MAX_VALUE, Long.MIN_VALUE, 0});
                    range[0] = Math.min(range[0], rec.offset());
                    range[1] = Math.max(range[1], rec.offset());
                    range[2]++;
                }
            }
            consumer.commitSync(Duration.ofSeconds(30));
            committed = consumer.committed(consumer.assignment(), Duration.ofSeconds(30));
        }
        StringBuilder out = new StringBuilder("{\"consumed\":").append(records.size())
                .append(",\"expected\":").append(expected)
                .append(",\"elapsed_ms\":").append((System.nanoTime() - started) / 1_000_000)
                .append(",\"partitions\":{");
        appendRanges(out, ranges);
        out.append("},\"committed\":{");
        boolean first = true;
        for (Map.Entry<Integer, OffsetAndMetadata> entry : byPartition(committed).entrySet()) {
            if (!first) out.append(',');
            first = false;
            out.append('"').append(entry.getKey()).append("\":").append(entry.getValue() == null ? "null" : entry.getValue().offset());
        }
        out.append("},\"records\":[");
        for (int i = 0; i < records.size(); i++) {
            ConsumerRecord<byte[], byte[]> rec = records.get(i);
            if (i > 0) out.append(',');
            out.append('[').append(rec.partition()).append(',').append(rec.offset()).append(',')
                    .append(text(rec.key())).append(',').append(text(rec.value())).append(',').append(rec.timestamp()).append(']');
        }
        out.append("]}");
        System.out.println(out);
    }

    private static Map<Integer, OffsetAndMetadata> byPartition(Map<TopicPartition, OffsetAndMetadata> committed) {
        Map<Integer, OffsetAndMetadata> out = new TreeMap<>();
        committed.forEach((tp, om) -> out.put(tp.partition(), om));
        return out;
    }

    private static void appendRanges(StringBuilder out, Map<Integer, long[]> ranges) {
        boolean first = true;
        for (Map.Entry<Integer, long[]> entry : ranges.entrySet()) {
            if (!first) out.append(',');
            first = false;
            long[] r = entry.getValue();
            out.append('"').append(entry.getKey()).append("\":{\"first\":").append(r[0])
                    .append(",\"last\":").append(r[1]).append(",\"count\":").append(r[2]).append('}');
        }
    }

    private static String text(byte[] bytes) {
        return bytes == null ? "null" : quote(new String(bytes, StandardCharsets.UTF_8));
    }

    private static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
