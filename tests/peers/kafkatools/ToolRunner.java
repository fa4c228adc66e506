import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;

import org.apache.kafka.common.utils.Exit;

/**
 * Runs Kafka's command-line tools one after another in one JVM, so a test pays for one JVM start.
 *
 * stdin: one command per line, tab-separated: main class, then its arguments.
 * stdout: per command a header line "@@@ exit_code stdout_bytes stderr_bytes", then those bytes.
 * A tool's System.out/System.err are captured. Its first Exit.exit ends it as the process would end:
 * the code is kept, and whatever the tool does while the exception unwinds (some catch Throwable and
 * print it) goes nowhere.
 */
public final class ToolRunner {
    private static final class ExitCalled extends RuntimeException {
        final int code;

        ExitCalled(int code) {
            super(null, null, false, false);
            this.code = code;
        }
    }

    private static Integer exitCode;

    private static void exit(int code) {
        if (exitCode == null) {
            exitCode = code;
            PrintStream discard = new PrintStream(OutputStream.nullOutputStream());
            System.setOut(discard);
            System.setErr(discard);
        }
        throw new ExitCalled(code);
    }

    public static void main(String[] args) throws Exception {
        PrintStream realOut = System.out;
        PrintStream realErr = System.err;
        Exit.setExitProcedure((code, message) -> exit(code));
        Exit.setHaltProcedure((code, message) -> exit(code));
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) continue;
            String[] parts = line.split("\t", -1);
            String[] toolArgs = new String[parts.length - 1];
            System.arraycopy(parts, 1, toolArgs, 0, toolArgs.length);
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
            exitCode = null;
            int code = 0;
            try {
                Method main = Class.forName(parts[0]).getMethod("main", String[].class);
                main.invoke(null, (Object) toolArgs);
            } catch (InvocationTargetException e) {
                Throwable cause = e.getCause();
                if (cause instanceof ExitCalled) {
                    code = ((ExitCalled) cause).code;
                } else {
                    code = 99;
                    cause.printStackTrace(System.err);
                }
            } catch (Throwable t) {
                code = 98;
                t.printStackTrace(System.err);
            }
            if (exitCode != null) code = exitCode;
            System.out.flush();
            System.err.flush();
            System.setOut(realOut);
            System.setErr(realErr);
            byte[] o = out.toByteArray();
            byte[] e = err.toByteArray();
            realOut.print("@@@ " + code + " " + o.length + " " + e.length + "\n");
            realOut.write(o);
            realOut.write(e);
            realOut.flush();
        }
    }
}
