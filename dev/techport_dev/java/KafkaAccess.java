// Grants SCRAM credentials and ACLs on a local Kafka with Kafka's own Admin client, in one JVM start.
// Run as a single-file source program (`java KafkaAccess.java <bootstrap>`), with the broker's jars on the
// class path; reads {"users": [{"name", "password"}], "acls": [{"principal", "resource", "name", "pattern",
// "operations": [...]}]} on standard input. Development tooling: Strimzi's KafkaUsers do this in Kubernetes.
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAccess {
    public static void main(String[] args) throws Exception {
        JsonNode spec = new ObjectMapper().readTree(System.in);
        Properties properties = new Properties();
        properties.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(properties)) {
            List<UserScramCredentialAlteration> users = new ArrayList<>();
            for (JsonNode user : spec.path("users")) {
                users.add(new UserScramCredentialUpsertion(
                    user.get("name").asText(),
                    new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                    user.get("password").asText()));
            }
            if (!users.isEmpty()) {
                admin.alterUserScramCredentials(users).all().get();
            }
            List<AclBinding> bindings = new ArrayList<>();
            for (JsonNode acl : spec.path("acls")) {
                ResourcePattern pattern = new ResourcePattern(
                    ResourceType.fromString(acl.get("resource").asText()),
                    acl.get("name").asText(),
                    "prefix".equals(acl.get("pattern").asText()) ? PatternType.PREFIXED : PatternType.LITERAL);
                for (JsonNode operation : acl.path("operations")) {
                    bindings.add(new AclBinding(pattern, new AccessControlEntry(
                        "User:" + acl.get("principal").asText(), "*",
                        AclOperation.fromString(operation.asText()), AclPermissionType.ALLOW)));
                }
            }
            if (!bindings.isEmpty()) {
                admin.createAcls(bindings).all().get();
            }
        }
    }
}
