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

    /** A stream whose destination changes per command: code that keeps the System.out it saw first
     *  (Scala's Console does) still writes to the current command's buffer. */
    private static final class Switch extends OutputStream {
        volatile OutputStream target = OutputStream.nullOutputStream();

        @Override
        public void write(int b) throws java.io.IOException {
            target.write(b);
        }

        @Override
        public void write(byte[] b, int off, int len) throws java.io.IOException {
            target.write(b, off, len);
        }
    }

    private static final Switch OUT = new Switch();
    private static final Switch ERR = new Switch();
    private static Integer exitCode;

    private static void exit(int code) {
        if (exitCode == null) {
            exitCode = code;
            OUT.target = OutputStream.nullOutputStream();
            ERR.target = OutputStream.nullOutputStream();
        }
        throw new ExitCalled(code);
    }

    public static void main(String[] args) throws Exception {
        PrintStream realOut = System.out;
        Exit.setExitProcedure((code, message) -> exit(code));
        Exit.setHaltProcedure((code, message) -> exit(code));
        System.setOut(new PrintStream(OUT, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(ERR, true, StandardCharsets.UTF_8));
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) continue;
            String[] parts = line.split("\t", -1);
            String[] toolArgs = new String[parts.length - 1];
            System.arraycopy(parts, 1, toolArgs, 0, toolArgs.length);
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            OUT.target = out;
            ERR.target = err;
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
            OUT.target = OutputStream.nullOutputStream();
            ERR.target = OutputStream.nullOutputStream();
            byte[] o = out.toByteArray();
            byte[] e = err.toByteArray();
            realOut.print("@@@ " + code + " " + o.length + " " + e.length + "\n");
            realOut.write(o);
            realOut.write(e);
            realOut.flush();
        }
    }
}
