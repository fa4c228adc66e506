import java.io.File;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.storage.internals.checkpoint.LeaderEpochCheckpointFile;
import org.apache.kafka.storage.internals.checkpoint.OffsetCheckpointFile;
import org.apache.kafka.storage.internals.checkpoint.PartitionMetadataFile;
import org.apache.kafka.storage.internals.log.EpochEntry;
import org.apache.kafka.storage.internals.log.LogDirFailureChannel;
import org.apache.kafka.storage.internals.log.ProducerStateEntry;
import org.apache.kafka.storage.internals.log.ProducerStateManager;

/**
 * Reads a partition directory's small files with Apache Kafka's own readers and prints what they hold,
 * one line per fact, so a test can compare it with what linkd wrote:
 *
 *   epoch EPOCH START_OFFSET                          (leader-epoch-checkpoint)
 *   checkpoint FILE TOPIC PARTITION OFFSET            (each offset checkpoint named on the command line)
 *   topic_id UUID                                     (partition.metadata)
 *   producer FILE PID EPOCH LAST_SEQ LAST_OFFSET OFFSET_DELTA TIMESTAMP COORD_EPOCH TXN_FIRST_OFFSET
 *
 * Arguments: the partition directory, then names of offset-checkpoint files inside it. Any reader's
 * exception ends the run with a non-zero exit (the runner prints it).
 */
public final class KafkaFiles {
    public static void main(String[] args) throws Exception {
        File dir = new File(args[0]);
        LogDirFailureChannel channel = new LogDirFailureChannel(1);
        for (EpochEntry e : new LeaderEpochCheckpointFile(new File(dir, "leader-epoch-checkpoint"), channel).read()) {
            System.out.println("epoch " + e.epoch + " " + e.startOffset);
        }
        for (int i = 1; i < args.length; i++) {
            Map<TopicPartition, Long> offsets = new OffsetCheckpointFile(new File(dir, args[i]), channel).read();
            for (Map.Entry<TopicPartition, Long> entry : offsets.entrySet()) {
                System.out.println("checkpoint " + args[i] + " " + entry.getKey().topic() + " " + entry.getKey().partition() + " " + entry.getValue());
            }
        }
        PartitionMetadataFile metadata = new PartitionMetadataFile(new File(dir, "partition.metadata"), channel);
        if (metadata.exists()) {
            System.out.println("topic_id " + metadata.read().topicId());
        }
        File[] files = dir.listFiles((d, name) -> name.endsWith(".snapshot"));
        java.util.Arrays.sort(files);
        for (File file : files) {
            List<ProducerStateEntry> entries = ProducerStateManager.readSnapshot(file);
            for (ProducerStateEntry p : entries) {
                System.out.println("producer " + file.getName() + " " + p.producerId() + " " + p.producerEpoch() + " " + p.lastSeq()
                    + " " + p.lastDataOffset() + " " + p.lastOffsetDelta() + " " + p.lastTimestamp() + " " + p.coordinatorEpoch()
                    + " " + p.currentTxnFirstOffset().orElse(-1));
            }
        }
    }
}
