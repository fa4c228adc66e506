// A small Kafka Streams application with processing.guarantee=exactly_once_v2, for linkd's tests.
//
//   <bootstrap> <application-id> <input-topic> <output-topic> <state-dir> <expected-output> <timeout-ms>
//
// Topology: input (String key, String value) -> groupByKey -> count (a RocksDB store with a changelog
// topic) -> "<count>:<value>" -> output. The record cache is off, so every input record yields exactly
// one output record and the output is a function of the committed input alone: a run against linkd
// and a run against Apache Kafka can be compared record by record. Commits every 100 ms, so one run
// spans many transactions (InitProducerId with a transactional.id, AddPartitionsToTxn, TxnOffsetCommit
// through sendOffsetsToTransaction, EndTxn).
//
// In the same JVM a read_committed consumer reads the output topic until <expected-output> records or
// the timeout; then the application closes. Prints one JSON line per output record
// {"partition":P,"key":K,"value":V}, then {"summary":{"records":N,"state":S,"errors":[...]}}.
// Exit 0 when the expected count was read and the application never failed, 1 otherwise.
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

public final class EosCountApp {
    private EosCountApp() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 7) {
            System.err.println("usage: EosCountApp <bootstrap> <application-id> <input> <output> <state-dir> <expected> <timeout-ms>");
            System.exit(2);
        }
        String bootstrap = args[0], appId = args[1], input = args[2], output = args[3], stateDir = args[4];
        int expected = Integer.parseInt(args[5]);
        long timeoutMs = Long.parseLong(args[6]);

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> records = builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()));
        // Count per key, and carry the record's value along so the output shows which input it came from.
        records.groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
                .aggregate(() -> "0:", (key, value, agg) -> (Long.parseLong(agg.substring(0, agg.indexOf(':'))) + 1) + ":" + value,
                        Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("counts")
                                .withKeySerde(Serdes.String()).withValueSerde(Serdes.String()))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.String()));

        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setUncaughtExceptionHandler(exc -> {
            errors.add(String.valueOf(exc));
            exc.printStackTrace();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> System.err.println("streams state " + before + " -> " + now));
        streams.start();

        Properties cprops = new Properties();
        cprops.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cprops.put(ConsumerConfig.GROUP_ID_CONFIG, appId + "-verifier");
        cprops.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cprops.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cprops.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        long deadline = System.currentTimeMillis() + timeoutMs;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cprops, new StringDeserializer(), new StringDeserializer())) {
            consumer.subscribe(List.of(output));
            while (out.size() < expected && System.currentTimeMillis() < deadline && errors.isEmpty()
                    && streams.state() != KafkaStreams.State.ERROR && streams.state() != KafkaStreams.State.NOT_RUNNING) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    out.add(r);
                }
            }
            // A moment more: anything beyond the expected count is a duplicate the comparison must see.
            long settle = System.currentTimeMillis() + 1000;
            while (System.currentTimeMillis() < settle) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    out.add(r);
                }
            }
        }
        KafkaStreams.State state = streams.state();
        streams.close(Duration.ofSeconds(30));
        for (ConsumerRecord<String, String> r : out) {
            System.out.println("{\"partition\":" + r.partition() + ",\"key\":" + quote(r.key()) + ",\"value\":" + quote(r.value()) + "}");
        }
        StringBuilder errs = new StringBuilder();
        for (String e : errors) {
            errs.append(errs.length() == 0 ? "" : ",").append(quote(e));
        }
        System.out.println("{\"summary\":{\"records\":" + out.size() + ",\"state\":\"" + state + "\",\"errors\":[" + errs + "]}}");
        System.out.flush();
        System.exit(out.size() >= expected && errors.isEmpty() ? 0 : 1);
    }

    private static String quote(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                default -> {
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c)); else b.append(c);
                }
            }
        }
        return b.append('"').toString();
    }
}
