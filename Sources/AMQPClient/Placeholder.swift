public enum AMQPClientPlaceholder {}
