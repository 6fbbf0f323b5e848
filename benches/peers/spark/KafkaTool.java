import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartition;

/**
 * The benchmark's Kafka chores, run as a single-file source program on the connector's
 * kafka-clients jar (`java -cp <jars> KafkaTool.java ...`), so no Kafka CLI is needed:
 *
 *   create BOOTSTRAP PARTITIONS [--log-append-time] TOPIC...
 *                                          create topics (replication 1); existing ones are kept.
 *                                          --log-append-time: the broker stamps each record with
 *                                          the time it appended it (message.timestamp.type)
 *   delete BOOTSTRAP PREFIX                delete every topic whose name starts with PREFIX
 *   ends   BOOTSTRAP TOPIC...              print "topic records" (sum of the partitions' end
 *                                          offsets) for each topic, one a line
 *   watch  BOOTSTRAP PERIOD_MS TOPIC...    every PERIOD_MS until killed, print one line
 *                                          "epoch_ms records..." (each topic's end offsets
 *                                          summed, in the order given): the input offered so far
 *                                          on fresh topics, read by one JVM for a whole run
 */
public class KafkaTool {
    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: KafkaTool create|delete|ends BOOTSTRAP ...");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put("bootstrap.servers", args[1]);
        try (Admin admin = Admin.create(p)) {
            switch (args[0]) {
                case "create" -> {
                    int partitions = Integer.parseInt(args[2]);
                    var existing = admin.listTopics().names().get(30, TimeUnit.SECONDS);
                    int first = 3;
                    Map<String, String> configs = new HashMap<>();
                    if (args.length > 3 && args[3].equals("--log-append-time")) {
                        configs.put("message.timestamp.type", "LogAppendTime");
                        first = 4;
                    }
                    List<NewTopic> topics = new ArrayList<>();
                    for (int i = first; i < args.length; i++) {
                        if (!existing.contains(args[i])) {
                            topics.add(new NewTopic(args[i], partitions, (short) 1).configs(configs));
                        }
                    }
                    admin.createTopics(topics).all().get(30, TimeUnit.SECONDS);
                }
                case "delete" -> {
                    List<String> doomed = new ArrayList<>();
                    for (String t : admin.listTopics().names().get(30, TimeUnit.SECONDS)) {
                        if (t.startsWith(args[2])) {
                            doomed.add(t);
                        }
                    }
                    if (!doomed.isEmpty()) {
                        admin.deleteTopics(doomed).all().get(60, TimeUnit.SECONDS);
                    }
                    System.out.println("deleted " + doomed.size() + " topics");
                }
                case "ends" -> {
                    List<String> names = new ArrayList<>();
                    for (int i = 2; i < args.length; i++) {
                        names.add(args[i]);
                    }
                    long[] sums = ends(admin, names, partitions(admin, names));
                    for (int i = 0; i < names.size(); i++) {
                        System.out.println(names.get(i) + " " + sums[i]);
                    }
                }
                case "watch" -> {
                    long period = Long.parseLong(args[2]);
                    List<String> names = new ArrayList<>();
                    for (int i = 3; i < args.length; i++) {
                        names.add(args[i]);
                    }
                    // The partitions are asked once: the benchmark creates its topics before.
                    Map<TopicPartition, OffsetSpec> ask = partitions(admin, names);
                    while (true) {
                        long t0 = System.currentTimeMillis();
                        long[] sums = ends(admin, names, ask);
                        StringBuilder line = new StringBuilder().append(System.currentTimeMillis());
                        for (long s : sums) {
                            line.append(' ').append(s);
                        }
                        System.out.println(line);
                        System.out.flush();
                        Thread.sleep(Math.max(0, period - (System.currentTimeMillis() - t0)));
                    }
                }
                default -> {
                    System.err.println("unknown command " + args[0]);
                    System.exit(2);
                }
            }
        }
    }

    /** Every partition of the topics, each asked for its latest offset. */
    static Map<TopicPartition, OffsetSpec> partitions(Admin admin, List<String> names) throws Exception {
        Map<String, TopicDescription> desc =
            admin.describeTopics(names).allTopicNames().get(30, TimeUnit.SECONDS);
        Map<TopicPartition, OffsetSpec> ask = new HashMap<>();
        desc.forEach((name, d) -> d.partitions().forEach(
            part -> ask.put(new TopicPartition(name, part.partition()), OffsetSpec.latest())));
        return ask;
    }

    /** Each topic's end offsets summed over its partitions, in the order of `names`. */
    static long[] ends(Admin admin, List<String> names, Map<TopicPartition, OffsetSpec> ask) throws Exception {
        var ends = admin.listOffsets(ask).all().get(30, TimeUnit.SECONDS);
        long[] sums = new long[names.size()];
        for (var e : ends.entrySet()) {
            sums[names.indexOf(e.getKey().topic())] += e.getValue().offset();
        }
        return sums;
    }
}
