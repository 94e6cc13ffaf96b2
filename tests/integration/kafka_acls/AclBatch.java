// Runs kafka-acls.sh commands (kafka.admin.AclCommand, the class the script runs)
// in one JVM: one command per line of standard input, its arguments separated by
// tabs. A JVM per command costs ~2.5 s on a loaded machine; this costs one start.
// A failing command ends the run with a non-zero status (AclCommand calls
// Exit.exit, which is made to throw here instead of ending the JVM).
//
//   java -cp '<kafka>/lib/*' AclBatch.java < commands.tsv

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.common.utils.Exit;

public class AclBatch {
    public static void main(String[] unused) throws Exception {
        Exit.setExitProcedure((code, message) -> {
            throw new IllegalStateException(
                "kafka-acls exited with status " + code + (message == null ? "" : ": " + message));
        });
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        int count = 0;
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (line.isEmpty()) {
                continue;
            }
            String[] args = line.split("\t");
            System.out.println("==== kafka-acls.sh " + String.join(" ", args));
            kafka.admin.AclCommand.main(args);
            count++;
        }
        System.out.println("==== " + count + " commands applied");
    }
}
