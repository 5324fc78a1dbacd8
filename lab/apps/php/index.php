<?php
// the lab's PHP app: proves nginx → php-fpm works
header('Content-Type: text/plain');
echo "php ok\n";
