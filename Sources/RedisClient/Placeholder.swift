public enum RedisClientPlaceholder {}
